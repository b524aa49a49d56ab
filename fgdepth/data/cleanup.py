"""Leftovers of processes that died: the temporary folders of a cache they were building, and
the decode workers of such a build that outlived it."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fgdepth.parallel import end_lost_workers

_TMP = re.compile(r"\.tmp(\d+)$")  # NAME.tmpPID: a cache folder that process PID is building


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def workers_folder(root: str | Path) -> Path:
    """Where the workers of a cache build under ``root`` leave a file each while they run."""
    return Path(root) / ".workers"


def end_lost_builds(root: str | Path) -> list[int]:
    """End the decode workers of the cache builds under ``root`` whose process is gone (each
    ends itself on its own; this is for those that could not); returns their pids."""
    return end_lost_workers(workers_folder(root))


def remove_stale_tmp(root: str | Path) -> list[Path]:
    """Remove the ``NAME.tmpPID`` folders directly under ``root`` whose process is gone (a
    build killed before it could clean up); returns what was removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in root.iterdir():
        found = _TMP.search(path.name)
        if found and path.is_dir() and not process_alive(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
