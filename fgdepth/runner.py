"""Glue between the command line and the layers: resolve data, track a run, train."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import replace
from pathlib import Path

from fgdepth.config import Config
from fgdepth.data import Dataset, open_dataset
from fgdepth.data.builtin import builtin_dataset, builtin_folder

log = logging.getLogger("fgdepth")
BUILTIN = ("", "builtin", "none", None)
PROCESS_TAG = "fgdepth.process"  # HOST/PID/START: the process that trains the run
STATE_DIR_TAG = "fgdepth.checkpoint_dir"  # its resumable state: in this folder's RUN_ID/


def resolve_dataset(config: Config) -> Dataset:
    """The configured dataset, or the built-in one (generated once, then reused)."""
    from fgdepth.data.modes import decode_workers

    data = config.data
    if data.path in BUILTIN:
        workers = decode_workers(data.workers)
        path = builtin_dataset(data.synth, workers)
    else:
        path = Path(data.path)
    return open_dataset(path, data, skip_bad=data.skip_bad)


def _resolve_transfers(config: Config) -> Config:
    """``init_from`` may name an MLflow run or model: ``config`` with its checkpoint file
    fetched. New stage objects: a stage may be shared with another config (a study's)."""
    from fgdepth.tracking import download_checkpoint

    stages = [
        replace(stage, init_from=str(download_checkpoint(stage.init_from)))
        if stage.init_from and not Path(stage.init_from).exists()
        else stage
        for stage in config.stages
    ]
    return replace(config, stages=stages)


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
    config = _resolve_transfers(config)
    with trk.tracked_run(
        experiment_name or trk.DEFAULT_EXPERIMENT,
        run_name or entry_point or config.name,
        settings.get("artifact_root"),
        {**(tags or {}), **_owner_tags(checkpoint_dir)},
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
    from fgdepth.engine.checkpoint import previous_state

    state.unlink(missing_ok=True)
    previous_state(state).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state.parent.rmdir()


# --- resuming -------------------------------------------------------------------------------


def _state_path(spec: str, root: Path) -> Path:
    """The state that ``--resume SPEC`` names: a run id, "latest", or a state file."""
    from fgdepth.engine.checkpoint import previous_state

    if spec == "latest":
        found = sorted(root.glob("*/state*.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"no training state under {root} to resume")
        folder = found[-1].parent
    elif spec.endswith(".pt"):
        return Path(spec)
    else:
        folder = root / spec
    state = folder / "state.pt"
    if not state.exists() and previous_state(state).exists():
        return previous_state(state)  # stopped between keeping the last state and the new one
    return state


def read_resume_state(spec: str, checkpoint_dir: str | Path, tracking: str = "local") -> dict:
    """The state to resume from. One that cannot be read is one line naming it (CheckpointError);
    its run is then ended FAILED with that reason, and the file set aside as ``state.bad.pt``
    so that the state before it (kept as ``state.prev.pt``) is what the run resumes from next."""
    from fgdepth import tracking as trk
    from fgdepth.engine.checkpoint import CheckpointError, previous_state, read_state

    path = _state_path(spec, Path(checkpoint_dir))
    try:
        return read_state(path)
    except CheckpointError as exc:
        reason, run_id = str(exc), path.parent.name
        trk.setup_tracking(tracking)
        trk.end_lost_run(run_id, reason, statuses=("RUNNING", "KILLED"))
        if path.name != "state.pt" or not previous_state(path).exists():
            raise CheckpointError(f"{reason}; run {run_id} ended FAILED") from None
        path.replace(path.with_name("state.bad.pt"))
        raise CheckpointError(
            f"{reason}; run {run_id} ended FAILED; the state before it is kept: continue from it "
            f"with fgdepth train --resume {run_id}"
        ) from None


# --- runs and folders left behind by processes that died ----------------------------------


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc), or "" where unknown:
    with the pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_tags(checkpoint_dir: str | Path) -> dict:
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
    from fgdepth.engine.checkpoint import previous_state

    folder = Path(run.data.tags.get(STATE_DIR_TAG, "")) / run.info.run_id
    state = folder / "state.pt"
    return state.exists() or previous_state(state).exists()


def end_lost_runs(tracking: str = "local") -> list[str]:
    """End FAILED ("process lost") the runs of this store that a process of this host trained,
    that are still RUNNING, whose process is gone and that left no state to resume (e.g.
    killed while its data was decoded); returns their ids."""
    from fgdepth import tracking as trk

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
    """Before training: close the runs of processes that died, and remove the temporary
    cache folders they left."""
    from fgdepth.data.cache import cache_root
    from fgdepth.data.cleanup import remove_stale_tmp

    for run_id in end_lost_runs(tracking):
        print(f"run {run_id}: its process is gone, with no state to resume: ended FAILED")
    remove_stale_tmp(cache_root())


def quiet_libraries() -> None:
    """Keep the console for progress and results: MLflow and Alembic chatter goes to warnings."""
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def builtin_dataset_exists(synth) -> bool:
    return (builtin_folder(synth) / "manifest.csv").exists()


def _planned_shape(config: Config):
    """The dataset's ``DataShape`` and train rows; the built-in one is described from its
    spec when it has not been generated yet (``--plan`` generates nothing)."""
    from fgdepth.data.modes import DataShape, data_shape

    data = config.data
    if data.path in BUILTIN and not builtin_dataset_exists(data.synth):
        spec = data.synth
        train = round(spec.n * (1 - data.test - data.val))
        return DataShape(spec.n, spec.n_backgrounds, spec.size), spec.n, train, "builtin"
    dataset = resolve_dataset(config)
    shape = data_shape(dataset)
    return shape, len(dataset), len(dataset.indices("train")), str(dataset.path)


def plan_report(config: Config, timed_steps: int = 3) -> dict:
    """What a run of ``config`` would do, without training: per stage its size, rows, data
    mode and cache bytes, an estimated time per epoch from a few timed steps here, and the
    free disk."""
    from fgdepth.config import ConfigError, scaled_stages
    from fgdepth.data import cache_root
    from fgdepth.data.modes import room_for_caches
    from fgdepth.engine.fit import default_device
    from fgdepth.engine.plan import check_samples, plan_data
    from fgdepth.engine.precision import resolve_precision
    from fgdepth.engine.timing import training_rate
    from fgdepth.models import build_model

    shape, rows, train_rows, where = _planned_shape(config)
    stages, refused = scaled_stages(config), None
    try:
        stages = check_samples(config, stages, train_rows)
    except ConfigError as exc:  # planned anyway, on the rows there are; training would refuse
        refused = str(exc)
        stages = [replace(s, samples=min(s.samples, train_rows)) for s in stages]
    scale = build_model(config.model.name, **config.model.options).input_scale
    data = plan_data(config, stages, scale, shape)
    device = default_device()
    precision = resolve_precision(config.precision, device)
    out_stages = []
    for stage, d in zip(stages, data, strict=True):
        rate = training_rate(config, stage, device, precision, timed_steps) if timed_steps else 0
        out_stages.append({
            "name": stage.name, "size": stage.size, "input_size": d.input_size,
            "rows": stage.samples, "epochs": stage.epochs, "mode": d.mode,
            "cache_bytes": d.cache_bytes, "new_cache_bytes": d.new_bytes,
            "train_samples_per_s": round(rate, 1),
            "epoch_seconds": round(stage.samples / rate, 1) if rate else None,
        })  # fmt: skip
    _, free = room_for_caches()
    return {
        "experiment": config.name, "profile": config.profile, "dataset": where,
        "dataset_rows": rows, "train_rows": train_rows, "cache": config.data.cache,
        "cache_budget_gb": config.data.cache_budget_gb, "cache_root": str(cache_root()),
        "disk_free_bytes": free, "device": str(device), "precision": precision,
        "stages": out_stages, "refused": refused,
    }  # fmt: skip


def plan_text(plan: dict) -> str:
    """``plan_report`` as a table for the console."""
    from fgdepth.data.disk import human

    lines = [
        f"{plan['experiment']} at the {plan['profile']} profile on {plan['dataset']} "
        f"({plan['dataset_rows']:,} rows, {plan['train_rows']:,} for training); "
        f"data.cache: {plan['cache']}; {human(plan['disk_free_bytes'])} free under "
        f"{plan['cache_root']}; timed on {plan['device']} in {plan['precision']}",
        f"{'stage':<10}{'size':>6}{'inputs':>8}{'rows':>10}{'epochs':>7}  {'mode':<7}"
        f"{'cache':>10}{'to write':>10}{'samples/s':>11}{'per epoch':>11}",
    ]
    for s in plan["stages"]:
        per_epoch = f"{s['epoch_seconds'] / 60:.1f} min" if s["epoch_seconds"] else "-"
        lines.append(
            f"{s['name']:<10}{s['size']:>6}{s['input_size']:>8}{s['rows']:>10,}{s['epochs']:>7}"
            f"  {s['mode']:<7}{human(s['cache_bytes']):>10}{human(s['new_cache_bytes']):>10}"
            f"{s['train_samples_per_s']:>11}{per_epoch:>11}"
        )
    if plan.get("refused"):
        lines.append(f"training would refuse this: {plan['refused']} (planned on those rows)")
    return "\n".join(lines)
