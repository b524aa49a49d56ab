"""When training stops early, the same way on every rank.

Three things can end training before its last batch: a stop request (a signal, or a pruner
through ``stop()``), the run's time budget (``max_minutes``), and, between them, a resumable
state falls due every ``checkpoint_minutes``, and a validation within training at the times
``train_for`` is given. All are checked after every batch and agreed over the ranks in one
small all-reduce, so that every rank takes the same branch at the same batch.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from fgdepth.engine.distributed import SINGLE, World, largest

SIGNALS = ("SIGINT", "SIGTERM")  # stop reasons every rank can name when one rank got them


class Interrupted(Exception):
    """Training was asked to stop (a signal); the state at that batch went to the callbacks."""

    def __init__(self, reason: str, where: str):
        super().__init__(f"{reason}: stopped at {where}")
        self.reason = reason


class StopNow(KeyboardInterrupt):
    """A second signal: stop at once, wherever the work is. A KeyboardInterrupt, so that no
    ``except Exception`` on its way catches it; ``reason`` names the signal."""

    def __init__(self, reason: str):
        super().__init__(f"{reason} again: stopped at once")
        self.reason = reason


def exit_code(reason: str) -> int:
    """The exit status of a process that a signal stopped, as if the signal had ended it:
    130 for SIGINT, 143 for SIGTERM."""
    return 128 + signal.Signals[reason] if reason in SIGNALS else 1


def _stop_code(reason: str | None) -> float:
    if not reason:
        return 0.0
    return float(SIGNALS.index(reason) + 2) if reason in SIGNALS else 1.0


def _stop_reason(code: float, own: str | None) -> str:
    """The reason on every rank: its own, else the signal another rank received."""
    if own:
        return own
    return SIGNALS[int(code) - 2] if code >= 2 else "stop requested on another rank"


@dataclass
class Verdict:
    """What the policy says after a batch."""

    stop: str | None = None  # a stop request: save a state and raise Interrupted
    deadline: bool = False  # the time budget is spent: end the epoch here, then test
    checkpoint: bool = False  # a resumable state is due
    report: int = 0  # the share whose validation within training is due (``train_for``)


class StopPolicy:
    """Stop requests, the deadline and checkpoint times, agreed over ``world``'s ranks.

    ``stop()`` returns a reason to stop (or None); ``max_minutes`` counts from ``spent``
    seconds already used by an earlier session of the run."""

    def __init__(
        self,
        stop: Callable[[], str | None] | None,
        max_minutes: float | None,
        checkpoint_minutes: float,
        spent: float = 0.0,
        world: World = SINGLE,
    ):
        now = time.monotonic()
        self.stop, self.world = stop, world
        self.end = now + max_minutes * 60 - spent if max_minutes else math.inf
        self.train_end = math.inf  # see ``train_for``
        self.reports: dict[int, float] = {}  # share -> when its validation is due
        self.last_batch, self.batch_s = now, math.inf  # when the batch before ended; see below
        self.every = checkpoint_minutes * 60
        self.last_checkpoint = now
        self.max_minutes = max_minutes

    def after_batch(self) -> Verdict:
        now = time.monotonic()
        reason = self.stop() if self.stop is not None else None
        # a training budget ends before a batch that would end more than half past it, so
        # that a run trains for its budget give or take half a batch (the quickest batch so
        # far in the epoch: its first one also starts the data workers)
        self.batch_s = min(self.batch_s, now - self.last_batch)
        self.last_batch = now
        flags = [
            _stop_code(reason),
            float(now > self.end or now + self.batch_s / 2 > self.train_end),
            float(now - self.last_checkpoint >= self.every),
            float(max((k for k, t in self.reports.items() if now >= t), default=0)),
        ]
        code, deadline, due, share = largest(flags, self.world)
        if share > 0:  # one validation, numbered alike on every rank, for the shares passed
            self.reports = {k: t for k, t in self.reports.items() if k > share}
        stop = _stop_reason(code, reason) if code > 0 else None
        report = int(share) if stop is None else 0
        return Verdict(stop, deadline > 0, due > 0 or stop is not None, report)

    def train_for(self, seconds: float, reports: dict[int, float] | None = None) -> None:
        """The training time left in a run's budget of training time: the epoch under way
        ends once it is spent (``math.inf``: no such budget, or between epochs); ``reports``:
        share -> in how many seconds of training from now its validation is due."""
        self.train_end = self.last_batch = time.monotonic()
        self.reports = {k: self.train_end + r for k, r in (reports or {}).items() if r < seconds}
        self.train_end += seconds
        self.batch_s = math.inf

    def paused(self, seconds: float) -> None:
        """Training stood still for ``seconds`` (a validation within it): the training time
        left and the validations due move by as much; ``max_minutes`` (wall time) does not."""
        self.train_end += seconds
        self.last_batch += seconds
        self.reports = {k: t + seconds for k, t in self.reports.items()}

    def deadline_passed(self) -> bool:
        return largest([float(time.monotonic() > self.end)], self.world)[0] > 0

    def checkpointed(self) -> None:
        self.last_checkpoint = time.monotonic()
