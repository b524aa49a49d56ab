import os
import subprocess

from fgdepth.data.cleanup import process_alive, remove_stale_tmp


def test_only_the_tmp_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])  # a process that has ended: its pid names no process
    dead.wait()
    names = [f"a-32px-v1.tmp{dead.pid}", f"b-32px-v1.tmp{os.getpid()}", "c.tmp", "d-32px-v1"]
    for name in names:
        (tmp_path / name).mkdir()
    assert not process_alive(dead.pid) and process_alive(os.getpid())
    assert remove_stale_tmp(tmp_path) == [tmp_path / names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    assert remove_stale_tmp(tmp_path / "none") == []
