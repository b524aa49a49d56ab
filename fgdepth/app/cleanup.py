"""Runs and folders left behind by processes that died: found by the process that trained
them (its host, pid and start time in a tag), closed before the next training."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fgdepth import tracking as trk
from fgdepth.engine.checkpoint import previous_state

PROCESS_TAG = "fgdepth.process"  # HOST/PID/START: the process that trains the run
STATE_DIR_TAG = "fgdepth.checkpoint_dir"  # its resumable state: in this folder's RUN_ID/


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or "" where unknown:
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def owner_tags(checkpoint_dir: str | Path) -> dict:
    pid = os.getpid()
    return {
        PROCESS_TAG: f"{socket.gethostname()}/{pid}/{_start_time(pid)}",
        STATE_DIR_TAG: str(Path(checkpoint_dir).resolve()),
    }


def _process_gone(owner: str) -> bool:
    """Whether the process a ``PROCESS_TAG`` names is gone; False for another host's."""
    from fgdepth.data.cleanup import process_alive

    host, _, rest = owner.partition("/")
    pid, _, start = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if not process_alive(int(pid)):
        return True
    return bool(start) and _start_time(int(pid)) not in ("", start)  # the pid was reused


def _has_state(run) -> bool:
    folder = Path(run.data.tags.get(STATE_DIR_TAG, "")) / run.info.run_id
    state = folder / "state.pt"
    return state.exists() or previous_state(state).exists()


def end_lost_runs(tracking: str = "local") -> list[str]:
    """End FAILED ("process lost") the runs of this store that a process of this host trained,
    that are still RUNNING, whose process is gone and that left no state to resume (e.g.
    killed while its data was decoded); returns their ids."""
    trk.setup_tracking(tracking)
    lost = []
    for run in trk.running_runs_tagged(PROCESS_TAG):
        owner = run.data.tags[PROCESS_TAG]
        if _process_gone(owner) and not _has_state(run):
            pid = owner.split("/")[1]
            trk.end_lost_run(run.info.run_id, f"process lost: pid {pid} ended without closing "
                             "the run, and left no state to resume")  # fmt: skip
            lost.append(run.info.run_id)
    return lost


def tidy_up(tracking: str = "local") -> None:
    """Before training: close the runs of processes that died, end the decode workers they
    left running, and remove the temporary cache folders they left."""
    from fgdepth.data.cache import cache_root
    from fgdepth.data.cleanup import end_lost_builds, remove_stale_tmp

    for run_id in end_lost_runs(tracking):
        print(f"run {run_id}: its process is gone, with no state to resume: ended FAILED")
    ended = end_lost_builds(cache_root())
    if ended:
        print(f"ended {len(ended)} decode worker(s) whose training process is gone: {ended}")
    remove_stale_tmp(cache_root())
