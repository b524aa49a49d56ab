"""SIGINT and SIGTERM, the same for every command that opens MLflow runs (train, study, tune).

The first signal asks the work to stop at its next safe point: training after the current
batch, with a state saved (``Interrupted``); a study or tune before its next run or trial. A
second one stops at once (``StopNow``). Either way every run the command opened ends KILLED,
one line says how to go on, and the command exits 128 + the signal: 130 (SIGINT), 143
(SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from fgdepth.engine.stopping import SIGNALS, StopNow, exit_code

_installed: StopSignals | None = None  # this process's handlers, while a command runs


class StopSignals:
    """Handlers for SIGINT and SIGTERM in this process; calling it gives the first signal's
    name, or None (the ``stop()`` the engine polls after every batch)."""

    def __init__(self):
        self.received: list[str] = []
        self.previous: dict = {}
        self.pid = os.getpid()

    def __call__(self) -> str | None:
        return self.received[0] if self.received else None

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.received:
            raise StopNow(name)
        self.received.append(name)
        # a raw write: the signal may have come in the middle of a print to stderr
        os.write(2, f"fgdepth: {name} received: stopping after the current batch (another "
                    f"{name} stops at once)\n".encode())  # fmt: skip

    def install(self) -> StopSignals:
        global _installed
        for name in SIGNALS:
            self.previous[name] = signal.signal(signal.Signals[name], self._handle)
        _installed = self
        return self

    def restore(self) -> None:
        global _installed
        for name, handler in self.previous.items():
            signal.signal(signal.Signals[name], handler)
        if _installed is self:
            _installed = None


def stop_on_signals() -> StopSignals:
    """Install the handlers for the rest of this process (a worker process of its own)."""
    return StopSignals().install()


def installed_signals() -> StopSignals | None:
    """The handlers a command of this process installed, if any."""
    return _installed if _installed is not None and _installed.pid == os.getpid() else None


@contextlib.contextmanager
def handled_signals():
    """The handlers while a command runs; the ones before are back once it returns (a command
    called from Python leaves its caller's handling as it was)."""
    stops = stop_on_signals()
    try:
        yield stops
    finally:
        stops.restore()


def stopped(exc: BaseException, go_on: str) -> int:
    """Say in one line what stopped (``exc``: Interrupted or StopNow) and how to go on; the
    exit status for it."""
    print(f"fgdepth: {exc}; {go_on}", file=sys.stderr, flush=True)
    return exit_code(exc.reason)
