import os
import subprocess
import sys

import pytest

from fgdepth.data.cleanup import end_lost_builds, process_alive, remove_stale_tmp, workers_folder
from fgdepth.parallel import process_start


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


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])


@pytest.mark.parametrize(
    ("owner_alive", "worker_alive", "ended"),
    [  # the build's process, its worker; whether the sweep ends the worker
        (False, True, True), (True, True, False), (False, False, False),
    ],
)  # fmt: skip
def test_the_workers_of_a_build_whose_process_is_gone_are_ended(
    tmp_path, owner_alive, worker_alive, ended
):
    """What a worker's own watch missed (it could not run, say): the next run ends it."""
    owner, worker = _sleeper(), _sleeper()
    starts = {p.pid: process_start(p.pid) for p in (owner, worker)}
    for proc, alive in ((owner, owner_alive), (worker, worker_alive)):
        if not alive:
            proc.kill()
            proc.wait()
    folder = workers_folder(tmp_path)
    folder.mkdir()
    file = folder / f"{owner.pid}-{worker.pid}"
    file.write_text(f"{owner.pid} {starts[owner.pid]} {worker.pid} {starts[worker.pid]}\n")
    try:
        assert end_lost_builds(tmp_path) == ([worker.pid] if ended else [])
        if ended:
            assert worker.wait(20) == -9
        assert file.exists() == owner_alive  # a file is forgotten once its owner is gone
    finally:
        for proc in (owner, worker):
            proc.kill()
            proc.wait()
