"""Where a command writes: checked before any work, and one clear line when a write fails.

Every place a command will write (a folder, a file) is checked at its start with
``check_writable``: it must be the right kind of thing, writable, with room where its size is
known, so that a read-only folder or a file in a folder's place is one line before the first
row is read, not a traceback after an hour. A write the OS refuses all the same (a full disk,
the process's file size limit, a disk remounted read-only) becomes ``WriteFailed`` naming the
path (``write_errors_as``). Bytes are reserved before any is written (``reserve``), so a full
disk is found at once, and ``DiskFull`` says which path needed how many bytes.
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


# why the OS refused a write, as the user can act on it
WRITE_ERRORS = {
    errno.ENOSPC: "not enough disk space",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (over this process's file size limit, ulimit -f)",
    errno.EROFS: "a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "a folder stands where a file is needed",
}


class WriteFailed(OSError):
    """A write the OS refused (full disk, file size limit, read-only disk...); the message is
    one line for the user, naming the path."""

    def __init__(self, path: str | os.PathLike, code: int, message: str | None = None):
        super().__init__(code, message or f"{path}: {WRITE_ERRORS[code]}")
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


class DiskFull(WriteFailed):
    """Not enough free disk for a write; the message is one line for the user."""

    def __init__(self, path: str | os.PathLike, needed: int, free: int | None = None):
        have = "" if free is None else f", {human(free)} free"
        message = f"{path}: not enough disk space ({human(needed)} needed{have})"
        super().__init__(path, errno.ENOSPC, message)
        self.needed, self.free = needed, free


class OutputRefused(UserError):
    """A place a command would write to that would mix with, or replace, what is there; one
    line for the user (the CLI prints it and exits 2)."""


class Unwritable(OutputRefused):
    """A place a command would write to that cannot be written (read-only, a file where a
    folder is needed, no room); one line for the user, before any work."""


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_folder_usable(folder: Path, shown: Path) -> None:
    """``folder``, which exists, can take new files: a folder, writable and enterable;
    ``shown``: the path the user gave (``folder`` or a path under it)."""
    if not folder.is_dir():
        if folder == shown:
            raise Unwritable(f"{shown}: exists and is not a folder")
        raise Unwritable(f"{shown}: cannot be made: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only_mount(folder) else "no permission to write"
        where = "" if folder == shown else f" in {folder}"
        raise Unwritable(f"{shown}: cannot be written: {why}{where}")


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_writable(
    path: str | os.PathLike,
    kind: str = "dir",
    *,
    suffixes: tuple[str, ...] = (),
    needed: int | None = None,
) -> None:
    """Raise ``Unwritable`` (one line naming ``path``) unless a command can write ``path``: a
    folder (``kind="dir"``) or a file (``"file"``, with one of ``suffixes`` when given) that
    is new, or already there as that kind and writable. What does not exist yet is made with
    its parents, so its nearest existing parent must be a writable folder. ``needed``: the
    bytes it will take, when known (``DiskFull`` when they do not fit)."""
    path = Path(path)
    if kind not in ("dir", "file"):
        raise ValueError(f"kind: {kind!r} is not 'dir' or 'file'")
    if suffixes and path.suffix.lower() not in suffixes:
        raise Unwritable(f"{path}: not a {' / '.join(suffixes)} file name")
    if path.is_dir() and kind == "file":
        raise Unwritable(f"{path}: is a folder, not a file")
    if path.exists() and kind == "dir":
        _check_folder_usable(path, path)
    elif path.exists() and not os.access(path, os.W_OK):
        raise Unwritable(f"{path}: cannot be written: no permission to write")
    else:
        _check_folder_usable(_nearest_existing(path.absolute().parent), path)
    if needed:
        check_room(path, needed, margin=0)


def check_new_folder(out: str | os.PathLike, allowed=None, source=None) -> None:
    """Refuse to write a command's folder ``out`` where it would lose a user's files: ``out``
    must be new, or an empty folder, or one that ``allowed(out)`` accepts (an unfinished run
    of the same command, to continue); never the ``source`` it reads, nor inside it; and it
    must be writable (``check_writable``)."""
    out = Path(out)
    if source is not None:
        src, dst = Path(source).resolve(), out.resolve()
        if dst == src or src in dst.parents:
            raise OutputRefused(f"{out}: is the source {source} or lies inside it; write elsewhere")
    if not out.exists():
        return check_writable(out, "dir")
    if not out.is_dir():
        raise OutputRefused(f"{out}: exists and is not a folder")
    if (out / "manifest.csv").exists():
        raise OutputRefused(f"{out}: holds a dataset (manifest.csv); it is not written into")
    if any(out.iterdir()) and not (allowed and allowed(out)):
        raise OutputRefused(f"{out}: is not empty; give a new or an empty folder")
    check_writable(out, "dir")


def check_new_file(out: str | os.PathLike) -> None:
    """Refuse to replace a file that is already there (or a folder of that name), and one
    that could not be written."""
    if Path(out).exists():
        raise OutputRefused(f"{out}: exists; it is not replaced")
    check_writable(out, "file")


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


def write_failure(exc: BaseException, path: str | os.PathLike | None = None) -> WriteFailed | None:
    """``exc`` as a one-line ``WriteFailed`` naming the file it names (else ``path``); None
    when it is not a refused write."""
    if isinstance(exc, WriteFailed):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRORS:
        return None
    where = exc.filename or path
    return None if where is None else WriteFailed(where, exc.errno)


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
    """Turn an ENOSPC raised inside the block into DiskFull naming ``path`` (and the bytes
    ``needed``), any other refused write (``WRITE_ERRORS``) into WriteFailed naming it."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFull(path, needed, free_bytes(path)) from None
        failed = write_failure(exc, path)
        if failed is not None:
            raise failed from None
        raise


@contextlib.contextmanager
def write_errors_as(path: str | os.PathLike):
    """Turn a write the OS refuses inside the block into WriteFailed naming the file (when
    the error names one) or ``path``."""
    try:
        yield
    except WriteFailed:
        raise
    except OSError as exc:
        failed = write_failure(exc, path)
        if failed is None:
            raise
        raise failed from None
