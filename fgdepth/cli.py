"""The ``fgdepth`` command: argument parsing only; the work happens in the package."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fgdepth.data.disk import DiskFull
from fgdepth.data.format import DataError
from fgdepth.parallel import default_workers


def _synth(args) -> int:
    from fgdepth.config import SynthConfig
    from fgdepth.data.synth import generate

    _check_synth_args(args)
    out = Path(args.out)
    if args.zip and out.suffix != ".zip":
        out = out.with_suffix(".zip")
    spec = SynthConfig(n=args.n, size=args.size, seed=args.seed, backgrounds=args.backgrounds)
    generate(spec, out, as_zip=args.zip, workers=args.workers)
    print(f"wrote {spec.n} samples on {spec.n_backgrounds} backgrounds to {out}")
    if args.preview:
        from fgdepth.data import open_dataset
        from fgdepth.data.preview import preview

        dataset = open_dataset(out)
        step = max(1, len(dataset) // 6)
        preview(dataset, range(0, min(len(dataset), 6 * step), step)).save(args.preview)
        print(f"preview: {args.preview}")
    return 0


def _check_synth_args(args) -> None:
    from fgdepth.config import SEED_MAX, ConfigError

    for name, value, low in (
        ("n", args.n, 1),
        ("size", args.size, 16),
        ("workers", args.workers, 1),
    ):
        if value < low:
            raise ConfigError(f"--{name}: {value} is not allowed ({low} or more)")
    if args.backgrounds is not None and args.backgrounds < 1:
        raise ConfigError(f"--backgrounds: {args.backgrounds} is not allowed (1 or more)")
    if not 0 <= args.seed <= SEED_MAX:
        raise ConfigError(f"--seed: {args.seed} is not allowed (a seed from 0 to {SEED_MAX})")


def _inspect(args) -> int:
    from fgdepth.data.inspect import inspect_dataset

    summary, problems = inspect_dataset(args.path, workers=args.workers, quiet=False)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) in {args.path}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


def _pack(args) -> int:
    from fgdepth.data import open_dataset
    from fgdepth.data.pack import pack

    dataset = open_dataset(args.path)
    out = pack(dataset, Path(args.out), args.rows_per_shard)
    print(f"wrote {len(dataset)} rows in {len(out.shards)} shard(s) to {args.out}")
    return 0


def _config_from_args(args):
    from fgdepth.config import ConfigError
    from fgdepth.engine.checks import load_experiment

    extra: dict = {}
    if args.data is not None:
        extra.setdefault("data", {})["path"] = None if args.data in ("", "builtin") else args.data
    if args.seed is not None:
        extra["seed"] = args.seed
    if args.max_minutes is not None:
        if not args.max_minutes >= 0:  # NaN too
            raise ConfigError(
                f"--max-minutes: {args.max_minutes} is not allowed (0 or more; 0: the profile's)"
            )
        if args.max_minutes > 0:
            extra["max_minutes"] = args.max_minutes
    if getattr(args, "skip_bad", False):
        extra.setdefault("data", {})["skip_bad"] = True
    return load_experiment(args.config, args.profile, args.set or [], extra)


def _stop_on_signals():
    """SIGINT / SIGTERM ask training to stop after the current batch (a second one stops at
    once); returns the ``stop()`` that tells the engine which signal came."""
    import signal

    received: list[str] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    return lambda: received[0] if received else None


def _launch_ranks(workers: int, argv: list[str]) -> int:
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


def _plan(args) -> int:
    """``fgdepth train ... --plan``: what the run would do, without training."""
    from fgdepth.runner import plan_report, plan_text, quiet_libraries

    quiet_libraries()
    plan = plan_report(_config_from_args(args), args.plan_steps)
    print(json.dumps(plan, indent=2) if args.json else plan_text(plan))
    return 0


def _train(args) -> int:
    from fgdepth.config import ConfigError
    from fgdepth.engine.distributed import launched_by_torchrun

    if args.plan:
        return _plan(args)
    if args.workers < 1:
        raise ConfigError(f"--workers: {args.workers} is not a number of processes (1 or more)")
    if args.workers > 1 and not launched_by_torchrun():
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus and args.workers > gpus:
            raise ConfigError(f"--workers: {args.workers} processes but {gpus} GPU(s): one per GPU")
        return _launch_ranks(args.workers, args.argv)
    from fgdepth.engine.distributed import init_world, shutdown

    world = init_world()
    try:
        return _train_rank(args, world)
    finally:
        shutdown(world)


def _train_rank(args, world) -> int:
    from fgdepth.config import Config, build
    from fgdepth.engine.distributed import share
    from fgdepth.engine.fit import Interrupted
    from fgdepth.engine.plan import check_against_data
    from fgdepth.runner import (
        quiet_libraries,
        read_resume_state,
        resolve_dataset,
        tidy_up,
        train_tracked,
    )

    resume = None
    if args.resume:  # rank 0 reads the state; the other ranks get it from rank 0
        state = None
        if world.main:
            state = read_resume_state(args.resume, args.checkpoint_dir, args.tracking)
        resume = share(state, world)
        config = build(Config, resume["config"])
        args.entry_point = args.entry_point or resume.get("entry_point")
    else:
        config = _config_from_args(args)  # every check happens before a run is created
    quiet_libraries()
    dataset = resolve_dataset(config)
    check_against_data(config, dataset)  # the data's checks too, before the store is touched
    if world.main:
        tidy_up(args.tracking)  # runs and cache folders left by processes that died
    stop = _stop_on_signals()
    started: list[str] = []
    try:
        result, run_id = train_tracked(
            config,
            dataset,
            tracking=args.tracking,
            experiment_name=args.experiment_name,
            run_name=args.run_name,
            entry_point=args.entry_point,
            system_metrics=not args.no_system_metrics,
            on_run_start=started.append,
            resume=resume,
            stop=stop,
            checkpoint_dir=args.checkpoint_dir,
        )
    except Interrupted as exc:
        if world.main:
            hint = f"continue with: fgdepth train --resume {started[0]}"
            print(f"fgdepth: {exc}; {hint}", file=sys.stderr)
        return 130 if exc.reason == "SIGINT" else 143
    if not world.main:
        return 0
    print(
        json.dumps(
            {
                "run_id": run_id,
                "minutes": round(result.seconds / 60, 2),
                "metrics": {k: round(v, 5) for k, v in result.metrics.items()},
            },
            indent=2,
        )
    )
    return 0


def _evaluate(args) -> int:
    import numpy as np
    import torch

    from fgdepth.config import Config
    from fgdepth.data import build_model_cache, open_dataset
    from fgdepth.engine.evaluate import evaluate
    from fgdepth.engine.fit import default_device
    from fgdepth.engine.precision import resolve_precision

    dataset = open_dataset(args.data, skip_bad=args.skip_bad)
    model, size = _model_and_size(args)
    device = default_device()
    rows = dataset.indices(None if args.split == "all" else args.split)
    if len(rows) == 0:
        raise DataError(f"{args.data}: the {args.split} split is empty")
    cache = build_model_cache(
        dataset, size, model.input_scale, dataset.source_side(), skip_bad=args.skip_bad
    )
    precision = resolve_precision(args.precision, device)
    layout = Config.channels_last  # predict in the layout that training uses by default
    if layout:
        model = model.to(memory_format=torch.channels_last)
    metrics = evaluate(
        model.to(device), cache, np.asarray(rows), device, precision=precision, channels_last=layout
    )
    out = {
        "model": args.model,
        "data": str(args.data),
        "split": args.split,
        "samples": len(rows),
        "size": size,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
    }
    print(json.dumps(out, indent=2))
    return 0


def _study(args) -> int:
    import mlflow

    from fgdepth.runner import quiet_libraries
    from fgdepth.study import STUDY, comparison_picture, markdown_table, run_study, ui_hint

    quiet_libraries()
    names = args.experiments.split(",") if args.experiments else STUDY
    rows = run_study(
        names, args.profile, args.data, args.seed or 0, args.tracking, args.experiment_name
    )
    table = markdown_table(rows)
    print("\n" + table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "comparison.md").write_text(table + "\n")
        comparison_picture(rows).save(out / "comparison.png")
        print(f"\ntable and picture: {out}/comparison.md, {out}/comparison.png")
    print(f"\nCompare the runs in the MLflow UI:\n  {ui_hint(mlflow.get_tracking_uri())}")
    return 0


def _tune(args) -> int:
    from fgdepth.runner import quiet_libraries, resolve_dataset, train_tracked
    from fgdepth.tuning import tune

    args.config = args.experiment
    overrides = list(args.set or [])
    for key, value in (
        ("tune.trials", args.trials),
        ("tune.pruner.name", args.pruner),
        ("tune.sampler", args.sampler),
        ("tune.objective.multi", True if args.multi_objective else None),
    ):
        if value not in (None, ""):
            overrides.append(f"{key}={value}")
    args.set = overrides
    config = _config_from_args(args)
    quiet_libraries()
    outcome = tune(
        config,
        args.experiment,
        study_name=args.study or None,
        storage=args.storage,
        workers=args.workers,
        tracking=args.tracking,
        experiment_name=args.experiment_name,
        out=Path(args.out) if args.out else None,
        heartbeat=args.heartbeat,
    )
    print(f"\ntrials: {outcome.counts}")
    print(f"best trial {outcome.best_trial}: value {outcome.best_value}")
    for key, value in outcome.best_params.items():
        print(f"  {key}: {value}")
    print(f"best configuration: {outcome.best_yaml}")
    print(f"plots and the table of trials: {outcome.best_yaml.parent}")
    if args.train_best:
        from fgdepth.engine.checks import load_experiment

        print("\n== training the best configuration ==", flush=True)
        best = load_experiment(outcome.best_yaml, args.train_best)
        result, run_id = train_tracked(
            best,
            resolve_dataset(best),
            tracking=args.tracking,
            experiment_name=args.experiment_name,
            run_name=f"{best.name} ({args.train_best})",
            entry_point="tune",
            tags={"optuna.study": outcome.study.study_name, "fgdepth.tuned": "best"},
        )
        print(json.dumps({"run_id": run_id, "metrics": result.metrics}, indent=2))
    return 0


def _model_and_size(args):
    """The model of ``--model`` and the size to predict at: ``--size``, else the size it was
    trained at; a size the model cannot take is one line."""
    from fgdepth.config import ConfigError
    from fgdepth.runner import quiet_libraries
    from fgdepth.tracking import load_logged_model, setup_tracking

    quiet_libraries()
    setup_tracking(args.tracking)
    model, trained_size = load_logged_model(args.model)
    multiple = getattr(model, "size_multiple", 16)
    if args.size is not None and (args.size < 16 or args.size % multiple):
        raise ConfigError(
            f"--size: {args.size} is not allowed (this model takes multiples of {multiple}, "
            "16 or more)"
        )
    return model, args.size or trained_size or 64


def _predict(args) -> int:
    from fgdepth.predict import distance_text, predict_files, predict_manifest

    if bool(args.manifest) == bool(args.bg or args.fgbg):
        raise DataError("give --bg and --fgbg, or --manifest")
    if not args.manifest and not (args.bg and args.fgbg):
        raise DataError("give both --bg and --fgbg")
    model, size = _model_and_size(args)
    out = Path(args.out)
    if args.manifest:
        rows = predict_manifest(model, size, Path(args.manifest), out, args.stop_on_error)
        print(f"predictions: {out / 'predictions.csv'}")
        failed = sum(row["status"] != "ok" for row in rows)
        if failed:
            print(f"fgdepth: {failed} of {len(rows)} pair(s) failed: see the status column",
                  file=sys.stderr)  # fmt: skip
        return 1 if failed else 0
    result = {"name": "pair", **predict_files(model, size, Path(args.bg), Path(args.fgbg), out)}
    print(
        f"{args.fgbg}: foreground distance {distance_text(result['distance'])} (0..1 depth units)"
    )
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _report(args) -> int:
    import mlflow

    from fgdepth.report import make_report, register_best
    from fgdepth.runner import quiet_libraries
    from fgdepth.tracking import setup_tracking

    quiet_libraries()
    setup_tracking(args.tracking)
    experiments = [e for e in (args.experiment or "").split(",") if e] or None
    report = make_report(
        experiments,
        Path(args.out),
        include_trials=args.include_trials,
        references=not args.no_references,
    )
    columns = ["run", "mask_iou", "depth_rmse", "fg_distance_error", "minutes"]
    print(report.frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nreport: {report.files['report.html']}  (and report.csv)")
    if report.run_id:
        print(f"logged to MLflow run {report.run_id} ({mlflow.get_tracking_uri()})")
    if args.register:
        uri = register_best(report.frame, args.register, args.alias, args.rank_by)
        print(f"registered the best run by {args.rank_by}: {uri}")
    return 0


def _whole(text: str) -> int:
    """A whole number, also written as a float (``1e3``); argparse reports anything else."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
        if not value.is_integer():
            raise ValueError
        return int(value)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=["smoke", "cpu", "full"],
        default=None,
        help="scale: smoke (seconds), cpu (minutes on a laptop), full (original)",
    )
    p.add_argument("--data", default=None, help="dataset folder or .zip (default: built-in)")
    p.add_argument("--seed", type=_whole, default=None)
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--skip-bad", action="store_true", help="train without unreadable rows")
    p.add_argument(
        "--tracking",
        default="local",
        help="mlruns_config/NAME.yaml or a path (MLFLOW_TRACKING_URI wins)",
    )
    p.add_argument("--experiment-name", default=None, help="MLflow experiment (default fgdepth)")
    p.add_argument("--no-system-metrics", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgdepth", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write the built-in procedural dataset")
    synth.add_argument("--out", required=True, help="output folder (or .zip with --zip)")
    synth.add_argument("--n", type=int, default=2000, help="number of samples")
    synth.add_argument("--size", type=int, default=192, help="image side in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--backgrounds",
        type=int,
        default=None,
        help="number of backgrounds (default: one per 20 samples, at least 10)",
    )
    synth.add_argument("--zip", action="store_true", help="write one .zip instead of a folder")
    synth.add_argument("--workers", type=int, default=default_workers())
    synth.add_argument("--preview", metavar="PNG", help="also save a preview grid")
    synth.set_defaults(run=_synth)

    data = sub.add_parser("data", help="dataset tools")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    inspect = data_sub.add_parser("inspect", help="check a dataset and print a JSON summary")
    inspect.add_argument("path")
    inspect.add_argument("--workers", type=int, default=default_workers())
    inspect.set_defaults(run=_inspect)
    pack = data_sub.add_parser(
        "pack", help="write a dataset as WebDataset tar shards, for many machines to stream"
    )
    pack.add_argument("path", help="dataset folder or .zip")
    pack.add_argument("--out", required=True, help="output folder (read it with --data OUT)")
    pack.add_argument("--rows-per-shard", type=int, default=10000)
    pack.set_defaults(run=_pack)

    train = sub.add_parser("train", help="train an experiment, tracked in MLflow")
    train.add_argument("--config", default="default", help="experiment name or YAML file")
    _add_train_options(train)
    train.add_argument("--run-name", default=None)
    train.add_argument(
        "--resume",
        metavar="RUN_ID|latest",
        help="continue a stopped or killed run from its last state, in the same MLflow run",
    )
    train.add_argument("--checkpoint-dir", default="outputs/checkpoints")
    train.add_argument(
        "--workers",
        type=_whole,
        default=1,
        help="training processes on this node, data-parallel (DDP through torchrun)",
    )
    train.add_argument(
        "--plan",
        action="store_true",
        help="print what the run would do (stages, data modes, cache bytes, disk, time per "
        "epoch from a few timed steps) and exit without training",
    )
    train.add_argument("--json", action="store_true", help="with --plan: as JSON")
    train.add_argument(
        "--plan-steps", type=int, default=3, help="with --plan: timed steps per stage (0: none)"
    )
    train.add_argument("--entry-point", default=None, help=argparse.SUPPRESS)
    train.set_defaults(run=_train)

    study = sub.add_parser("study", help="the main job: every loss combination, compared")
    study.add_argument(
        "--experiments",
        default=None,
        help="comma-separated experiment names (default: all entry points)",
    )
    study.add_argument("--out", default="outputs/study", help="where the comparison is written")
    _add_train_options(study)
    study.set_defaults(run=_study, profile="cpu")

    tn = sub.add_parser("tune", help="an Optuna study over an experiment's tune block")
    tn.add_argument("--experiment", default="default", help="experiment name or YAML file")
    _add_train_options(tn)
    tn.add_argument("--trials", type=_whole, default=None)
    tn.add_argument("--study", default=None, help="study name (default EXPERIMENT-PROFILE)")
    tn.add_argument(
        "--storage",
        default="",
        help="sqlite:///optuna.db (default), journal:FILE, postgresql://user@host/db",
    )
    tn.add_argument("--workers", type=_whole, default=1, help="processes")
    tn.add_argument("--pruner", default=None, help="median (default), hyperband, none")
    tn.add_argument("--sampler", default=None, help="tpe (default), random")
    tn.add_argument("--multi-objective", action="store_true", help="mask IoU and depth RMSE")
    tn.add_argument(
        "--heartbeat", type=int, default=60, help="seconds between a trial's heartbeats (RDB)"
    )
    tn.add_argument("--out", default=None, help="default outputs/tune/STUDY")
    tn.add_argument(
        "--train-best",
        metavar="PROFILE",
        default=None,
        help="then train the best configuration at this profile",
    )
    tn.set_defaults(run=_tune, profile="cpu")

    pr = sub.add_parser("predict", help="mask, depth and distance for image pairs")
    pr.add_argument(
        "--model", required=True, help="runs:/RUN_ID/model, models:/NAME@ALIAS or a checkpoint"
    )
    pr.add_argument("--bg", help="background image")
    pr.add_argument("--fgbg", help="the same scene with the foreground")
    pr.add_argument("--manifest", help="CSV with columns bg,fg_bg (paths relative to it)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--size", type=int, default=None, help="default: the model's training size")
    pr.add_argument("--tracking", default="local")
    pr.add_argument(
        "--stop-on-error", action="store_true", help="stop at a manifest's first bad row"
    )
    pr.set_defaults(run=_predict)

    rp = sub.add_parser("report", help="compare finished runs: table, charts, pictures")
    rp.add_argument("--experiment", default="", help="MLflow experiment name(s), comma-separated")
    rp.add_argument("--out", default="outputs/report")
    rp.add_argument("--include-trials", action="store_true", help="also tuning trials")
    rp.add_argument("--no-references", action="store_true")
    rp.add_argument("--register", metavar="NAME", help="register the best run's model")
    rp.add_argument("--alias", default="champion")
    rp.add_argument("--rank-by", default="score", help="score (mask_iou - depth_rmse) or a metric")
    rp.add_argument("--tracking", default="local")
    rp.set_defaults(run=_report)

    ev = sub.add_parser("evaluate", help="metrics of a model on a dataset, as JSON")
    ev.add_argument(
        "--model", required=True, help="runs:/RUN_ID/model, models:/NAME@ALIAS or a checkpoint file"
    )
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ev.add_argument("--size", type=int, default=None, help="default: the model's training size")
    ev.add_argument("--precision", default="auto")
    ev.add_argument("--skip-bad", action="store_true")
    ev.add_argument("--tracking", default="local")
    ev.set_defaults(run=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from fgdepth.config import ConfigError

    try:
        return args.run(args)
    except (DataError, ConfigError, FileNotFoundError) as exc:
        print(f"fgdepth: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:  # a cache, state or model that did not fit: nothing half-written
        print(f"fgdepth: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
