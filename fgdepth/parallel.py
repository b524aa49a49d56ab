"""Run independent chunks of work in worker processes, with a progress bar.

Workers come from a fork server, not from forking the caller: a training run has threads
(MLflow's system-metrics monitor, torch's pools), and a fork taken while one of them holds a
lock leaves the child waiting on it forever. A worker that dies raises here instead of hanging.

Workers end when the process that started them (their owner) dies, however it dies: with a
fork server a worker's parent is the server, which lives as long as its workers do, so
neither would notice on its own (``WorkerGuard``). What the guard misses (a worker that
cannot run its watch) a later process ends from the files the workers leave
(``end_lost_workers``).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

WATCH_SECONDS = 0.5  # how often a worker looks whether its owner is still there
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), which with the pid names one
    process even after the pid is reused; None when it is gone or a zombie (dead, not yet
    reaped); "" where there is no /proc to read it from."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    return None if fields[0] in ("Z", "X") else fields[19]


def same_process(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs."""
    now = process_start(pid)
    return now is not None and (not start or not now or now == start)


class WorkerGuard:
    """Called in a worker as it starts: it ends (SIGTERM to itself: a worker that handles it
    stops cleanly) when its owner, the process ``owner`` (default: this one, for a guard made
    in the owner and called in its workers), is gone. On Linux the worker also gets SIGTERM
    when its parent dies. ``pid_dir``: a file per worker there, for ``end_lost_workers``."""

    def __init__(self, owner: int | None = None, pid_dir: str | Path | None = None):
        self.owner = owner or os.getpid()
        self.start = process_start(self.owner)
        self.pid_dir = None if pid_dir is None else str(pid_dir)

    def __call__(self, *_) -> None:  # a DataLoader's worker_init_fn gives the worker's id
        if sys.platform.startswith("linux"):
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if self.pid_dir is not None:
            folder = Path(self.pid_dir)
            folder.mkdir(parents=True, exist_ok=True)
            me = os.getpid()
            (folder / f"{self.owner}-{me}").write_text(
                f"{self.owner} {self.start} {me} {process_start(me)}\n"
            )
        threading.Thread(target=self._watch, name="owner-watch", daemon=True).start()

    def _watch(self) -> None:
        while same_process(self.owner, self.start):
            time.sleep(WATCH_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    def forget(self) -> None:
        """In the owner, once its workers have ended: their files go."""
        if self.pid_dir is not None:
            for path in Path(self.pid_dir).glob(f"{self.owner}-*"):
                path.unlink(missing_ok=True)


def end_lost_workers(pid_dir: str | Path) -> list[int]:
    """End (SIGKILL) the workers listed in ``pid_dir`` whose owner is gone and that still
    run; forget the files of workers that ended. Returns the pids it ended."""
    folder, ended = Path(pid_dir), []
    if not folder.is_dir():
        return ended
    for path in folder.iterdir():
        try:
            owner, owner_start, pid, start = path.read_text().split()
        except (OSError, ValueError):
            continue  # being written by a worker starting now
        if same_process(int(owner), owner_start):
            continue
        if same_process(int(pid), start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
                ended.append(int(pid))
        path.unlink(missing_ok=True)
    return ended


def _start_worker(guard: WorkerGuard, setup: bytes) -> None:
    """The guard first; then ``setup``, pickled apart so that what it imports (torch: seconds)
    comes after the guard, which then watches over that time too."""
    guard()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the owner
    fn, args = pickle.loads(setup)  # decides what to stop, and the worker is told then
    if fn is not None:
        fn(*args)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def chunked(n: int, chunk: int) -> list[range]:
    return [range(start, min(n, start + chunk)) for start in range(0, n, chunk)]


def run_chunks(
    fn: Callable[[range], object],
    chunks: Sequence[range],
    workers: int = 1,
    desc: str = "",
    quiet: bool = False,
    setup: Callable | None = None,
    setup_args: tuple = (),
    weights: Sequence[int] | None = None,
    pid_dir: str | Path | None = None,
) -> Iterator[object]:
    """Yield ``fn(chunk)`` for every chunk (in completion order), advancing a bar by rows.

    ``fn`` must be a module-level function. ``setup(*setup_args)`` runs once in each worker
    (and here, when running inline) to hand it large shared state without pickling per task.
    ``weights`` (default: chunk lengths) is how far each finished chunk moves the bar.
    ``pid_dir``: where the workers leave a file each while they run (``WorkerGuard``).
    """
    weights = list(weights) if weights is not None else [len(c) for c in chunks]
    total = sum(weights)
    bar = tqdm(total=total, desc=desc, unit="sample", disable=quiet or not sys.stderr.isatty())
    try:
        if workers <= 1 or len(chunks) <= 1:
            if setup is not None:
                setup(*setup_args)
            results: Iterable = map(fn, chunks)
            for weight, result in zip(weights, results, strict=True):
                bar.update(weight)
                yield result
            return
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        guard = WorkerGuard(pid_dir=pid_dir)
        with contextlib.ExitStack() as stack:
            stack.callback(guard.forget)  # after the pool's workers have ended
            pool = stack.enter_context(ProcessPoolExecutor(
                min(workers, len(chunks)), mp.get_context(method), _start_worker,
                (guard, pickle.dumps((setup, setup_args))),
            ))  # fmt: skip
            pending = {
                pool.submit(fn, chunk): weight
                for chunk, weight in zip(chunks, weights, strict=True)
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        bar.update(pending.pop(future))
                        yield future.result()
            except BrokenProcessPool as exc:
                raise RuntimeError(f"{desc or 'work'}: a worker process died ({exc})") from None
            finally:
                for future in pending:
                    future.cancel()
    finally:
        bar.close()
