import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fgdepth.parallel import chunked, process_start, run_chunks, same_process

# held by the parent while workers start: a worker forked from it would inherit it held
_LOCK = threading.Lock()
_state: dict = {}


def _setup(offset: int) -> None:
    if not _LOCK.acquire(timeout=20):
        raise RuntimeError("worker started with a lock its parent held")
    _LOCK.release()
    _state["offset"] = offset


def _shift(chunk: range) -> list[int]:
    return [i + _state["offset"] for i in chunk]


def _die(chunk: range) -> list[int]:
    if chunk.start == 4:
        os._exit(3)
    return list(chunk)


@pytest.mark.parametrize("workers", [1, 2])
def test_every_chunk_comes_back_once(workers):
    parts = run_chunks(_shift, chunked(10, 3), workers, quiet=True, setup=_setup, setup_args=(100,))
    assert sorted(i for part in parts for i in part) == list(range(100, 110))


def test_workers_do_not_inherit_a_lock_held_by_another_thread():
    held, release = threading.Event(), threading.Event()

    def hold():
        with _LOCK:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        parts = list(run_chunks(_shift, chunked(4, 2), 2, quiet=True, setup=_setup,
                                setup_args=(0,)))  # fmt: skip
    finally:
        release.set()
        thread.join()
    assert sorted(i for part in parts for i in part) == [0, 1, 2, 3]


def test_a_worker_that_dies_raises_instead_of_hanging():
    with pytest.raises(RuntimeError, match="decode: a worker process died"):
        list(run_chunks(_die, chunked(8, 2), 2, desc="decode", quiet=True))


def _nap(chunk: range) -> list[int]:
    time.sleep(600)
    return list(chunk)


def processes() -> dict[int, tuple[int, str]]:
    """Every process of this machine: its parent and start time (from /proc)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue  # ended meanwhile
            out[int(entry.name)] = (int(fields[1]), fields[19])
    return out


def descendants(pid: int) -> dict[int, str]:
    """The processes under ``pid`` (children, theirs, ...), with their start times."""
    table, found, todo = processes(), {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, start) in table.items():
            if ppid == parent and child not in found:
                found[child] = start
                todo.append(child)
    return found


def grandchildren(pid: int) -> list[int]:
    """Pool workers: with a fork server, the children of a child of ``pid``."""
    table = processes()
    children = {p for p, (ppid, _) in table.items() if ppid == pid}
    return [p for p, (ppid, _) in table.items() if ppid in children]


def wait_until_gone(left: dict[int, str], seconds: float = 20) -> list[int]:
    """The processes of ``left`` still there after up to ``seconds``."""
    end = time.monotonic() + seconds
    while (alive := [p for p, start in left.items() if same_process(p, start)]) and (
        time.monotonic() < end
    ):
        time.sleep(0.1)
    return alive


# an owner of a pool whose workers would sleep for ten minutes
OWNER = (
    "from fgdepth.parallel import chunked, run_chunks; from tests.test_parallel import _nap; "
    "list(run_chunks(_nap, chunked(4, 1), 2, quiet=True))"
)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_when_their_owner_is_killed():
    """The fork server's workers, the server and the resource tracker do not outlive it."""
    root = Path(__file__).resolve().parent.parent
    owner = subprocess.Popen([sys.executable, "-c", OWNER], cwd=root)
    end = time.monotonic() + 120
    while len(grandchildren(owner.pid)) < 2 and owner.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    left = descendants(owner.pid)
    assert len(grandchildren(owner.pid)) == 2, left  # both workers started, and sleep
    owner.kill()
    owner.wait()
    assert wait_until_gone(left) == []


def test_a_process_is_named_by_its_pid_and_start_time():
    me = process_start(os.getpid())
    assert same_process(os.getpid(), me)
    assert not same_process(os.getpid(), str(int(me) + 1))  # a reused pid: another process
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert process_start(dead.pid) is None and not same_process(dead.pid, None)
    zombie = subprocess.Popen(["true"])
    end = time.monotonic() + 20
    while process_start(zombie.pid) is not None and time.monotonic() < end:
        time.sleep(0.01)  # dead, not yet reaped: a zombie counts as gone
    assert process_start(zombie.pid) is None
    zombie.wait()


def test_a_worker_ignores_ctrl_c_which_the_whole_group_gets():
    parts = list(run_chunks(_sigint_ignored, chunked(4, 2), 2, quiet=True))
    assert parts == [True, True]


def _sigint_ignored(chunk: range) -> bool:
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN
