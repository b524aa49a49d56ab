"""SIGINT and SIGTERM, the same for every command that opens MLflow runs (train, study, tune).

The first signal asks the work to stop at its next safe point: training after the current
batch, with a state saved (``Interrupted``); a study or tune before its next run or trial. A
second one stops at once (``StopNow``), though never inside a tracking store's call: one
stopped in a database transaction would keep the database locked (SQLite), and the run could
not be ended; the stop waits for the call to return. A signal after the stop was said is
ignored: nothing is left to stop. Either way every run the command opened
ends KILLED, one line says how to go on, and the command exits 128 + the signal: 130 (SIGINT),
143 (SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from fgdepth.engine.stopping import SIGNALS, StopNow, exit_code

_installed: StopSignals | None = None  # this process's handlers, while a command runs
# the modules whose calls a second signal waits for: those that hold a store's transaction
STORE_MODULES = ("mlflow.store.", "sqlalchemy.", "optuna.storages.")
RETRY_S = 0.05  # how soon a stop that waited for a store's call looks again


class StopSignals:
    """Handlers for SIGINT and SIGTERM in this process; calling it gives the first signal's
    name, or None (the ``stop()`` the engine polls after every batch)."""

    def __init__(self):
        self.received: list[str] = []
        self.previous: dict = {}
        self.pid = os.getpid()
        self.active = False
        self.done = False  # the stop is complete and said: a later signal has nothing to stop

    def __call__(self) -> str | None:
        return self.received[0] if self.received else None

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.done:  # the process is on its way out with the status already chosen
            return
        if self.received:
            if in_store_call(frame):
                threading.Timer(RETRY_S, self._again, (signum,)).start()
                return
            raise StopNow(name)
        self.received.append(name)
        # a raw write: the signal may have come in the middle of a print to stderr
        os.write(2, f"fgdepth: {name} received: stopping after the current batch (another "
                    f"{name} stops at once)\n".encode())  # fmt: skip

    def _again(self, signum: int) -> None:
        """The second signal once more, while these handlers are still installed."""
        if self.active:
            os.kill(self.pid, signum)

    def install(self) -> StopSignals:
        global _installed
        for name in SIGNALS:
            self.previous[name] = signal.signal(signal.Signals[name], self._handle)
        _installed = self
        self.active = True
        return self

    def restore(self) -> None:
        global _installed
        self.active = False
        for name, handler in self.previous.items():
            signal.signal(signal.Signals[name], handler)
        if _installed is self:
            _installed = None


def in_store_call(frame) -> bool:
    """Whether the main thread, at ``frame``, is inside a call of a tracking or study store."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


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
    exit status for it. One raw write: a second signal cannot leave half the line written
    (and its own line after that half). Once it is written a later signal is ignored: it came
    after the work had stopped (raised then, it would only break the interpreter's exit)."""
    stops = installed_signals()
    if stops is not None:
        stops.done = True
    sys.stderr.flush()
    os.write(2, f"fgdepth: {exc}; {go_on}\n".encode())
    return exit_code(exc.reason)
