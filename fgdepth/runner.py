"""Glue between the command line and the layers: resolve data, track a run, train."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from fgdepth.config import Config
from fgdepth.data import Dataset, SplitSpec, open_dataset
from fgdepth.data.builtin import builtin_dataset

log = logging.getLogger("fgdepth")
BUILTIN = ("", "builtin", "none", None)


def resolve_dataset(config: Config) -> Dataset:
    """The configured dataset, or the built-in one (generated once, then reused)."""
    data = config.data
    if data.path in BUILTIN:
        path = builtin_dataset(data.synth.n, data.synth.size, data.synth.seed, data.workers)
    else:
        path = Path(data.path)
    return open_dataset(
        path, SplitSpec(test=data.test, val=data.val, seed=data.split_seed), skip_bad=data.skip_bad
    )


def _resolve_transfers(config: Config) -> None:
    """``init_from`` may name an MLflow run or model: fetch its checkpoint file."""
    from fgdepth.tracking import download_checkpoint

    for stage in config.stages:
        if stage.init_from and not Path(stage.init_from).exists():
            stage.init_from = str(download_checkpoint(stage.init_from))


def train_tracked(
    config: Config,
    dataset: Dataset,
    *,
    tracking: str = "local",
    experiment_name: str | None = None,
    run_name: str | None = None,
    entry_point: str | None = None,
    callbacks=(),
    system_metrics: bool = True,
    parent_run_id: str | None = None,
    tags: dict | None = None,
    stopped: tuple[type[BaseException], ...] = (),
    on_run_start=None,
    resume: dict | None = None,
    stop=None,
    checkpoint_dir: str | Path = "outputs/checkpoints",
):
    """Train ``config`` on ``dataset`` inside an MLflow run; returns (FitResult, run_id).
    Under torchrun every rank calls it; ranks other than 0 train without a run (run_id None).

    ``parent_run_id`` makes it a child run (a tuning trial); ``stopped`` exceptions end it
    KILLED rather than FAILED; ``on_run_start(run_id)`` is called once the run exists.
    A resumable state is kept in ``checkpoint_dir/RUN_ID/state.pt``; ``resume`` (such a
    state) continues its run, in the same MLflow run; ``stop()`` returning a reason (a signal)
    stops training at the next batch with a state saved, and the run ends KILLED."""
    from fgdepth import tracking as trk
    from fgdepth.engine import fit
    from fgdepth.engine.callbacks import ConsoleCallback
    from fgdepth.engine.checkpoint import StateCheckpoint
    from fgdepth.engine.distributed import current_world
    from fgdepth.engine.fit import Interrupted, check_against_data

    check_against_data(config, dataset)  # before the run exists: a bad config makes none
    if not current_world().main:  # under torchrun only rank 0 tracks and keeps states
        return fit(config, dataset, callbacks, resume=resume, stop=stop), None

    settings = trk.setup_tracking(tracking)
    _resolve_transfers(config)
    with trk.tracked_run(
        experiment_name or trk.DEFAULT_EXPERIMENT,
        run_name or entry_point or config.name,
        settings.get("artifact_root"),
        tags,
        system_metrics,
        parent_run_id=parent_run_id,
        run_id=resume["run_id"] if resume else None,
        stopped=(Interrupted, *stopped),
    ) as run:
        run_id = run.info.run_id
        if on_run_start is not None:
            on_run_start(run_id)
        cb = trk.MLflowCallback(run_id, dataset.fingerprint(), entry_point)
        console = ConsoleCallback(lambda line: print(line, flush=True))
        keep = StateCheckpoint(
            Path(checkpoint_dir) / run_id / "state.pt",
            {"run_id": run_id, "config": config.to_dict(), "entry_point": entry_point},
        )
        try:
            result = fit(config, dataset, [cb, console, keep, *callbacks], resume=resume, stop=stop)
        except stopped:  # e.g. a pruned trial: not to be resumed
            _discard(keep.path)
            raise
    _discard(keep.path)  # finished: nothing left to resume
    return result, run_id


def _discard(state: Path) -> None:
    state.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state.parent.rmdir()


def quiet_libraries() -> None:
    """Keep the console for progress and results: MLflow and Alembic chatter goes to warnings."""
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
