"""One process trains a run at a time.

The process that trains a run holds an exclusive lock on ``RUN_ID/state.lock`` beside the
run's states, from before its first state until it ends (the kernel lets go of it when the
process dies, however it dies). A second process that would train the same run, a second
``--resume`` or a resume of a run still training, is refused in one line naming the holder,
before it writes anything. The file holds the holder's pid and host, for that line.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from fgdepth.errors import UserError

LOCK_NAME = "state.lock"
_held: dict[Path, int] = {}  # this process's locks: the open file that holds each


class RunBusy(UserError):
    """Another process trains this run; one line naming it."""


def _holder(fd: int) -> str:
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "another process"  # it has its lock, and is about to write who it is


def hold_run_lock(folder: str | Path) -> Path:
    """Take the lock of the run whose states lie in ``folder`` (made if missing) for this
    process, without waiting; RunBusy when another process holds it. Taking it again in the
    same process is a no-op."""
    folder = Path(folder)
    path = (folder / LOCK_NAME).resolve()
    if path in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunBusy(
            f"run {folder.name} is being trained by {holder} (it holds {path}); a run is "
            "trained by one process at a time: wait for that one to end, or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
    _held[path] = fd
    return path


def release_run_lock(folder: str | Path, remove: bool = False) -> None:
    """Let go of the run's lock, if this process holds it; ``remove``: delete the file too
    (the run is done), before letting go, so that no one takes a lock on a file about to go."""
    path = (Path(folder) / LOCK_NAME).resolve()
    fd = _held.pop(path, None)
    if fd is None:
        return
    if remove:
        path.unlink(missing_ok=True)
    os.close(fd)
