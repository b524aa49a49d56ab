"""Disk room: how much is free, and one clear error when a write would not fit.

A cache build or a state write that runs out of disk half-way leaves a half-written file and a
Python traceback. Here the bytes are reserved before any is written (``reserve``), so a full
disk is found at once, and ``DiskFull`` says in one line which path needed how many bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from fgdepth.errors import UserError

# kept free beyond what a write needs: the system and other programs need room too
MARGIN_BYTES = 1 << 30


class DiskFull(OSError):
    """Not enough free disk for a write; the message is one line for the user."""

    def __init__(self, path: str | os.PathLike, needed: int, free: int | None = None):
        have = "" if free is None else f", {human(free)} free"
        message = f"{path}: not enough disk space ({human(needed)} needed{have})"
        super().__init__(errno.ENOSPC, message)
        self.path, self.needed, self.free = Path(path), needed, free

    def __str__(self) -> str:
        return self.strerror


class OutputRefused(UserError):
    """A place a command would write to that would mix with, or replace, what is there; one
    line for the user (the CLI prints it and exits 2)."""


def check_new_folder(out: str | os.PathLike, allowed=None, source=None) -> None:
    """Refuse to write a command's folder ``out`` where it would lose a user's files: ``out``
    must be new, or an empty folder, or one that ``allowed(out)`` accepts (an unfinished run
    of the same command, to continue); never the ``source`` it reads, nor inside it."""
    out = Path(out)
    if source is not None:
        src, dst = Path(source).resolve(), out.resolve()
        if dst == src or src in dst.parents:
            raise OutputRefused(f"{out}: is the source {source} or lies inside it; write elsewhere")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputRefused(f"{out}: exists and is not a folder")
    if (out / "manifest.csv").exists():
        raise OutputRefused(f"{out}: holds a dataset (manifest.csv); it is not written into")
    if any(out.iterdir()) and not (allowed and allowed(out)):
        raise OutputRefused(f"{out}: is not empty; give a new or an empty folder")


def check_new_file(out: str | os.PathLike) -> None:
    """Refuse to replace a file that is already there (or a folder of that name)."""
    if Path(out).exists():
        raise OutputRefused(f"{out}: exists; it is not replaced")


def human(n: float) -> str:
    """Bytes for a person: 1.5 GB, 320 MB, 12 kB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_room(path: str | os.PathLike, needed: int, margin: int = MARGIN_BYTES) -> None:
    """Raise DiskFull unless ``needed`` bytes fit on ``path``'s disk with ``margin`` left."""
    free = free_bytes(path)
    if needed + margin > free:
        raise DiskFull(path, needed + margin, free)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def reserve(path: str | os.PathLike, size: int) -> None:
    """Allocate ``size`` bytes to an existing file now, so that writes through a memory map
    cannot fail later (a full disk under a memory map kills the process with SIGBUS)."""
    if size <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull(path, size, free_bytes(path)) from None
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # e.g. some network mounts
                raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def disk_full_as(path: str | os.PathLike, needed: int):
    """Turn an ENOSPC raised inside the block into DiskFull naming ``path``."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path, needed, free_bytes(path)) from None
        raise
