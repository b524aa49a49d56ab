"""Leftovers of processes that died: the temporary folders of a cache they were building."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

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
