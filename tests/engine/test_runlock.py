"""``fgdepth.engine.runlock``: one process trains a run at a time."""

import socket
import subprocess
import sys

import pytest

from fgdepth.engine import runlock
from fgdepth.engine.runlock import LOCK_NAME, RunBusy, hold_run_lock, release_run_lock

# another process that takes the lock, says so, and holds it until its stdin closes; it loads
# the module alone, without the engine package around it (torch: seconds to import)
HOLDER = (
    "import sys, importlib.util as u; s = u.spec_from_file_location('runlock', sys.argv[2]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); m.hold_run_lock(sys.argv[1]); "
    "print('held', flush=True); sys.stdin.read()"
)


@pytest.fixture
def holder(tmp_path):
    folder = tmp_path / ("a" * 32)
    args = [sys.executable, "-c", HOLDER, str(folder), runlock.__file__]
    proc = subprocess.Popen(args, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline() == "held\n"
    yield folder, proc
    proc.kill()
    proc.wait()


def test_a_run_held_by_another_process_is_refused_in_one_line_naming_it(holder):
    folder, proc = holder
    before = (folder / LOCK_NAME).read_text()
    with pytest.raises(RunBusy) as caught:
        hold_run_lock(folder)
    message = str(caught.value)
    assert "\n" not in message
    holder = f"pid {proc.pid} on {socket.gethostname()}"
    assert message.startswith(f"run {folder.name} is being trained by {holder} (it holds ")
    assert (folder / LOCK_NAME).read_text() == before  # the refused one wrote nothing


def test_a_lock_is_free_once_its_holder_is_gone_however_it_ended(holder):
    folder, proc = holder
    proc.kill()  # SIGKILL: the kernel lets go of the lock
    proc.wait()
    assert hold_run_lock(folder) == (folder / LOCK_NAME).resolve()
    release_run_lock(folder)


def test_the_holder_may_take_it_again_and_a_finished_run_removes_it(tmp_path):
    folder = tmp_path / "run"
    path = hold_run_lock(folder)
    assert hold_run_lock(folder) == path  # the same process: no conflict with itself
    release_run_lock(folder)
    assert path.exists()  # a stopped run: the file stays, unlocked
    hold_run_lock(folder)
    release_run_lock(folder, remove=True)
    assert not path.exists()
    release_run_lock(folder)  # not held: nothing to do
