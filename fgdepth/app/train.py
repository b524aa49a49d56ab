"""One tracked training run: ``RunSpec`` says what and where, ``train`` runs it in an MLflow
run, ``train_command`` is ``fgdepth train`` (ranks, resume, signals, the result line)."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from fgdepth import tracking as trk
from fgdepth.app.cleanup import owner_tags, tidy_up
from fgdepth.app.datasets import resolve_dataset
from fgdepth.app.signals import handled_signals, stopped
from fgdepth.config import Config, ConfigError, build
from fgdepth.data import Dataset
from fgdepth.data.disk import check_writable
from fgdepth.engine import fit
from fgdepth.engine.callbacks import Callback, ConsoleCallback, FitResult
from fgdepth.engine.checkpoint import (
    CheckpointError,
    StateCheckpoint,
    previous_state,
    read_state,
    save_checkpoint,
)
from fgdepth.engine.distributed import current_world
from fgdepth.engine.plan import check_against_data
from fgdepth.engine.runlock import hold_run_lock, release_run_lock
from fgdepth.engine.stopping import Interrupted, StopNow, exit_code
from fgdepth.errors import NotFound


@dataclass
class RunSpec:
    """One training run: what to train, and where and how it is tracked."""

    config: Config | None  # None when resuming: the state's config is used
    tracking: str = "local"  # mlruns_config/NAME.yaml or a path
    experiment_name: str | None = None  # default: tracking.DEFAULT_EXPERIMENT
    run_name: str | None = None  # default: "ENTRY seed N" (the entry point, else the experiment)
    entry_point: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None  # a child run (a tuning trial)
    system_metrics: bool = True
    callbacks: list[Callback] = field(default_factory=list)
    checkpoint_dir: str | Path = "outputs/checkpoints"  # resumable states, per run id
    keep_state: bool = True  # write resumable states (a tuning trial is retried, not resumed)
    resume: dict | None = None  # a state to continue, in its own run (read_resume_state)


def _with_transfers(config: Config) -> Config:
    """``init_from`` may name an MLflow run or model: its checkpoint file instead (a new
    config: the caller's stays as it was)."""
    stages = [
        replace(s, init_from=str(trk.download_checkpoint(s.init_from)))
        if s.init_from and not Path(s.init_from).exists()
        else s
        for s in config.stages
    ]
    return replace(config, stages=stages)


def _log_model(run_id: str, result: FitResult, dataset: Dataset) -> None:
    """The trained model: its checkpoint, and the pyfunc that serves it; both keep the
    data's depth encoding, so that a prediction can be told in metres."""
    from fgdepth.serving import MODEL_CODE

    config, size = result.config, result.stages[-1].config.size
    encoding = dataset.depth_encoding
    with tempfile.TemporaryDirectory(prefix="fgdepth-") as tmp:
        ckpt = save_checkpoint(
            Path(tmp) / "model.pt", result.model, config.model.name, config.model.options,
            config=config.to_dict(), size=size, metrics=result.metrics,
            depth_encoding=encoding.to_dict() if encoding else None,
        )  # fmt: skip
        trk.log_model(run_id, ckpt, size, MODEL_CODE, encoding)


def _discard(state: Path) -> None:
    state.unlink(missing_ok=True)
    previous_state(state).unlink(missing_ok=True)
    release_run_lock(state.parent, remove=True)
    with contextlib.suppress(OSError):
        state.parent.rmdir()


def _fit_in_run(spec: RunSpec, config: Config, dataset: Dataset, run_id: str, stop):
    callbacks = [
        trk.MLflowCallback(
            run_id,
            dataset.fingerprint(),
            spec.entry_point,
            dataset.depth_encoding,
            source=str(dataset.path),
        ),
        ConsoleCallback(lambda line: print(line, flush=True)),
    ]
    keep = None
    if spec.keep_state:
        extra = {"run_id": run_id, "config": config.to_dict(), "entry_point": spec.entry_point}
        keep = StateCheckpoint(Path(spec.checkpoint_dir) / run_id / "state.pt", extra)
        callbacks.append(keep)
    result = fit(config, dataset, [*callbacks, *spec.callbacks], resume=spec.resume, stop=stop)
    _log_model(run_id, result, dataset)
    if keep is not None:
        _discard(keep.path)  # finished: nothing left to resume
    return result


def train(spec: RunSpec, dataset: Dataset | None = None, *, stop=None, on_run_start=None):
    """Train ``spec`` inside an MLflow run; returns (FitResult, run_id). Under torchrun every
    rank calls it; ranks other than 0 train without a run (run_id None).

    The run ends FINISHED, FAILED with the reason, or KILLED when training is interrupted (a
    signal through ``stop()``, whose state is kept to resume; a pruned trial).
    ``on_run_start(run_id)`` is called once the run exists."""
    config = spec.config
    dataset = dataset if dataset is not None else resolve_dataset(config)
    check_against_data(config, dataset)  # before the run exists: a bad config makes none
    if not current_world().main:  # under torchrun only rank 0 tracks and keeps states
        return fit(config, dataset, spec.callbacks, resume=spec.resume, stop=stop), None
    settings = trk.setup_tracking(spec.tracking)
    config = _with_transfers(config)
    locked = None
    try:
        with trk.tracked_run(
            spec.experiment_name or trk.DEFAULT_EXPERIMENT,
            spec.run_name or trk.run_name(spec.entry_point or config.name, config.seed),
            settings.get("artifact_root"),
            {**spec.tags, **owner_tags(spec.checkpoint_dir)},
            spec.system_metrics,
            parent_run_id=spec.parent_run_id,
            run_id=spec.resume["run_id"] if spec.resume else None,
            stopped=(Interrupted,),
        ) as run:
            run_id = run.info.run_id
            if spec.keep_state:  # before its first state: a --resume of it is refused meanwhile
                locked = hold_run_lock(Path(spec.checkpoint_dir) / run_id).parent
            if on_run_start is not None:
                on_run_start(run_id)
            result = _fit_in_run(spec, config, dataset, run_id, stop)
    finally:  # once the run has ended, however: this process writes no more to it
        if locked is not None:
            release_run_lock(locked)
    return result, run_id


# --- resuming ----------------------------------------------------------------------------------


RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id: a folder name, never a path


def _state_path(spec: str, root: Path) -> Path:
    """The state that ``--resume SPEC`` names: a run id or "latest", always a ``RUN_ID/state.pt``
    inside ``root``. A path is refused: a resume reads, and may set aside, the state it finds,
    so it must never reach a file outside the checkpoint folder."""
    if spec == "latest":
        found = sorted(root.glob("*/state*.pt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise NotFound(f"no training state under {root} to resume")
        folder = found[-1].parent
    elif RUN_ID.fullmatch(spec):
        folder = root / spec
    else:
        raise ConfigError(
            f"--resume {spec!r}: not a run id (32 hex digits, as `mlflow runs list` shows) nor "
            "'latest'; a state is found by its run id under --checkpoint-dir"
        )
    state = folder / "state.pt"
    if not state.exists() and previous_state(state).exists():
        return previous_state(state)  # stopped between keeping the last state and the new one
    return state


def read_resume_state(spec: str, checkpoint_dir: str | Path, tracking: str = "local") -> dict:
    """The state to resume from. One that cannot be read is one line naming it (CheckpointError);
    its run is then ended FAILED with that reason, and the file set aside as ``state.bad.pt``
    so that the state before it (kept as ``state.prev.pt``) is what the run resumes from next."""
    path = _state_path(spec, Path(checkpoint_dir))
    try:
        return read_state(path)
    except CheckpointError as exc:
        reason, run_id = str(exc), path.parent.name
        trk.setup_tracking(tracking)
        if trk.end_lost_run(run_id, reason, statuses=("RUNNING", "KILLED")):
            reason += f"; run {run_id} ended FAILED"
        if path.name != "state.pt" or not previous_state(path).exists():
            raise CheckpointError(reason) from None
        path.replace(path.with_name("state.bad.pt"))
        raise CheckpointError(
            f"{reason}; the state before it is kept: continue from it "
            f"with fgdepth train --resume {run_id}"
        ) from None


def resume_command(spec: RunSpec, run_id: str) -> str:
    """The command that continues ``run_id``: with the state folder and the tracking settings
    it was started with, where they are not the defaults (without them it would not be found)."""
    words = ["fgdepth", "train", "--resume", run_id]
    if Path(spec.checkpoint_dir) != Path(RunSpec.checkpoint_dir):
        words += ["--checkpoint-dir", str(spec.checkpoint_dir)]
    if spec.tracking != RunSpec.tracking:
        words += ["--tracking", str(spec.tracking)]
    return shlex.join(words)


# --- the command ---------------------------------------------------------------------------------


def kept_state(spec: RunSpec, run_id: str | None) -> bool:
    """Whether run ``run_id`` wrote a state to resume from (the last, or the one before)."""
    if run_id is None:
        return False
    state = Path(spec.checkpoint_dir) / run_id / "state.pt"
    return state.exists() or previous_state(state).exists()


def go_on(spec: RunSpec, run_id: str | None) -> str:
    """How to go on with a run a signal stopped: resume it from its state, where one was
    kept, else train it again."""
    if run_id is None:
        return "no run was started"
    if kept_state(spec, run_id):
        return f"continue with: {resume_command(spec, run_id)}"
    return f"run {run_id} kept no state to resume: train it again"


def launch_ranks(workers: int, argv: list[str]) -> int:
    """``fgdepth train --workers N``: the same command as N processes on this node, started by
    torchrun's launcher in this process. A signal reaches every rank (each saves its share of
    the stop, rank 0 the state); the exit status is the first failed rank's."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    rest, skip = [], False
    for arg in argv:  # the same arguments, less --workers
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            rest.append(arg)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={workers}", "-m", "fgdepth", *rest]))
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        code = exc.get_first_failure()[1].exitcode
        return 128 - code if code < 0 else code or 1
    return 0


def train_command(spec: RunSpec, resume: str | None = None, workers: int = 1, argv=()) -> int:
    """``fgdepth train``: N ranks on this node (``workers``), or this process as one rank
    (under torchrun, one of them); ``resume`` names a state to continue."""
    from fgdepth.engine.distributed import init_world, launched_by_torchrun, shutdown

    if workers < 1:
        raise ConfigError(f"--workers: {workers} is not a number of processes (1 or more)")
    # a bad --tracking or --resume, a server that does not answer, a folder that cannot take
    # the states: one line, before any process starts or any data is made
    trk.setup_tracking(spec.tracking)
    check_writable(spec.checkpoint_dir, "dir")
    if resume is not None:
        _state_path(resume, Path(spec.checkpoint_dir))
    if workers > 1 and not launched_by_torchrun():
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and workers > gpus:
            raise ConfigError(f"--workers: {workers} processes but {gpus} GPU(s): one per GPU")
        return launch_ranks(workers, list(argv))
    world = init_world()
    try:
        return _train_rank(spec, resume, world)
    finally:
        shutdown(world)


def _resumed(spec: RunSpec, resume: str, world) -> RunSpec:
    """``spec`` continuing the state ``resume`` names: rank 0 reads it, the others get it."""
    from fgdepth.engine.distributed import share

    state = None
    if world.main:
        folder = _state_path(resume, Path(spec.checkpoint_dir)).parent
        if folder.is_dir():  # another process that trains the run: refused, nothing written
            hold_run_lock(folder)
        state = read_resume_state(resume, spec.checkpoint_dir, spec.tracking)
        trk.setup_tracking(spec.tracking)
        if trk.run_status(state["run_id"]) is None:
            raise ConfigError(
                f"--resume {resume}: run {state['run_id']} is not in the tracking store "
                f"{trk.tracking_uri()}; resume with the --tracking it was trained with"
            )
    state = share(state, world)
    config = build(Config, state["config"])
    return replace(
        spec, config=config, resume=state, entry_point=spec.entry_point or state.get("entry_point")
    )


def _after_loss(spec: RunSpec, started: list[str]) -> str:
    """What to do once a lost tracking server answers again: resume the run from its last
    state, when one was written, else train again."""
    if started and kept_state(spec, started[0]):
        return f"its state is kept: once the server answers, {resume_command(spec, started[0])}"
    return "it saved no state yet: once the server answers, train again"


def _train_rank(spec: RunSpec, resume: str | None, world) -> int:
    trk.quiet_libraries()
    if resume is not None:
        spec = _resumed(spec, resume, world)
    dataset = resolve_dataset(spec.config)
    check_against_data(spec.config, dataset)  # the data's checks too, before the store is touched
    if world.main:
        tidy_up(spec.tracking)  # runs and cache folders left by processes that died
    started: list[str] = []
    try:
        with handled_signals() as stop:
            result, run_id = train(spec, dataset, stop=stop, on_run_start=started.append)
    except (Interrupted, StopNow) as exc:
        if not world.main:  # rank 0 says it
            return exit_code(exc.reason)
        return stopped(exc, go_on(spec, started[0] if started else None))
    except trk.ServerLost as exc:
        raise trk.ServerLost(f"{exc}; {_after_loss(spec, started)}") from None
    if world.main:
        minutes = round(result.seconds / 60, 2)
        metrics = {k: round(v, 5) for k, v in result.metrics.items()}
        print(json.dumps({"run_id": run_id, "minutes": minutes, "metrics": metrics}, indent=2))
    return 0
