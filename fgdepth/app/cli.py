"""The ``fgdepth`` command: argument parsing and dispatch; the work happens in ``fgdepth.app``.

Bad input of any kind (``fgdepth.errors.UserError``, and argparse's usage errors) is one line
on stderr and exit status 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fgdepth.app.profile import AUTO, CHOICES, resolve_profile
from fgdepth.config import PRECISIONS
from fgdepth.data.disk import check_writable, write_errors_as, write_failure
from fgdepth.errors import ConfigError, DataError, UserError
from fgdepth.parallel import default_workers

DESCRIPTION = (
    "Foreground mask and depth from a background image and the same scene with the foreground."
)


def _synth(args) -> int:
    from fgdepth.config import SynthConfig
    from fgdepth.data.synth import generate

    _check_synth_args(args)
    out = Path(args.out)
    if args.zip and out.suffix != ".zip":
        out = out.with_suffix(".zip")
    spec = SynthConfig(n=args.n, size=args.size, seed=args.seed, backgrounds=args.backgrounds)
    with write_errors_as(out):  # where it writes is checked before the first background
        generate(spec, out, as_zip=args.zip, workers=args.workers)
    print(f"wrote {spec.n} samples on {spec.n_backgrounds} backgrounds to {out}")
    if args.preview:
        from fgdepth.data import open_dataset
        from fgdepth.data.preview import preview

        dataset = open_dataset(out)
        step = max(1, len(dataset) // 6)
        with write_errors_as(args.preview):
            Path(args.preview).parent.mkdir(parents=True, exist_ok=True)
            preview(dataset, range(0, min(len(dataset), 6 * step), step)).save(args.preview)
        print(f"preview: {args.preview}")
    return 0


def _check_synth_args(args) -> None:
    from fgdepth.config import SEED_MAX

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
    if args.preview is not None:  # found now, not once the data is made
        from PIL import Image

        if Path(args.preview).suffix.lower() not in Image.registered_extensions():
            raise ConfigError(f"--preview {args.preview}: not an image file name (.png, .jpg)")
        check_writable(args.preview, "file")


def _inspect(args) -> int:
    from fgdepth.data.inspect import inspect_dataset

    if args.workers < 1:
        raise ConfigError(f"--workers: {args.workers} is not allowed (1 or more)")
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
    from fgdepth.data.disk import check_new_folder
    from fgdepth.data.pack import pack

    check_new_folder(args.out, source=args.path)  # before the dataset's manifest is read
    dataset = open_dataset(args.path)
    with write_errors_as(args.out):
        out = pack(dataset, Path(args.out), args.rows_per_shard)
    print(f"wrote {len(dataset)} rows in {len(out.shards)} shard(s) to {args.out}")
    return 0


def _config_from_args(args):
    from fgdepth.app.datasets import data_path
    from fgdepth.engine.checks import load_experiment

    extra: dict = {}
    if args.data is not None:
        extra.setdefault("data", {})["path"] = data_path(args.data)
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
    return load_experiment(args.config, resolve_profile(args.profile), args.set or [], extra)


def _plan(args) -> int:
    """``fgdepth train ... --plan``: what the run would do, without training."""
    from fgdepth.app.plan import plan_report, plan_text
    from fgdepth.tracking import quiet_libraries

    if args.plan_steps < 0:
        raise ConfigError(f"--plan-steps: {args.plan_steps} is not allowed (0 or more)")
    quiet_libraries()
    plan = plan_report(_config_from_args(args), args.plan_steps)
    print(json.dumps(plan, indent=2) if args.json else plan_text(plan))
    return 0


def _train(args) -> int:
    from fgdepth.app.train import RunSpec, train_command

    if args.plan:
        return _plan(args)
    # every check of the config happens before a run is created; a resumed run has its own
    config = None if args.resume is not None else _config_from_args(args)
    spec = RunSpec(
        config, args.tracking, args.experiment_name, args.run_name, args.entry_point,
        system_metrics=not args.no_system_metrics, checkpoint_dir=args.checkpoint_dir,
    )  # fmt: skip
    return train_command(spec, args.resume, args.workers, args.argv)


def _evaluate(args) -> int:
    from fgdepth.app.evaluate import evaluate_logged_model
    from fgdepth.tracking import quiet_libraries, setup_tracking

    quiet_libraries()
    setup_tracking(args.tracking, writes=False)
    overrides = {"seed": args.split_seed, "test": args.test, "val": args.val,
                 "skip_bad": True if args.skip_bad else None}  # fmt: skip
    out = evaluate_logged_model(
        args.model, split=args.split, data=args.data, size=args.size, precision=args.precision,
        split_overrides=overrides,
    )  # fmt: skip
    print(json.dumps(out, indent=2))
    return 0


def _study(args) -> int:
    from fgdepth.app.study import study_command

    names = args.experiments.split(",") if args.experiments else None
    seeds = args.seeds or ([args.seed] if args.seed is not None else None)
    overrides = list(args.set or [])
    if args.max_minutes is not None:
        overrides.append(f"max_minutes={args.max_minutes}")
    profile = resolve_profile(args.profile)
    return study_command(
        names, profile, args.data, seeds, args.tracking, args.experiment_name, args.out,
        not args.no_system_metrics, overrides, args.minutes_per_run, argv=args.argv,
    )  # fmt: skip


def _tune(args) -> int:
    from fgdepth.app.tune import tune_command

    args.config = args.experiment
    overrides = list(args.set or [])
    for key, value in (
        ("tune.trials", args.trials),
        ("tune.minutes", args.minutes or None),
        ("tune.pruner.name", args.pruner),
        ("tune.sampler", args.sampler),
        ("tune.objective.multi", True if args.multi_objective else None),
    ):
        if value not in (None, ""):
            overrides.append(f"{key}={value}")
    args.set = overrides
    train_best = resolve_profile(args.train_best) if args.train_best else None
    return tune_command(
        _config_from_args(args), args.experiment, train_best, study_name=args.study or None,
        storage=args.storage, workers=args.workers, tracking=args.tracking,
        experiment_name=args.experiment_name, out=Path(args.out) if args.out else None,
        heartbeat=args.heartbeat, argv=args.argv, force_data=args.force_data == "yes",
        compare=args.compare == "yes",
    )  # fmt: skip


def _predict(args) -> int:
    from fgdepth.app.evaluate import checked_size, load_model
    from fgdepth.predict import distance_text, predict_files, predict_manifest
    from fgdepth.tracking import quiet_libraries, setup_tracking

    if bool(args.manifest) == bool(args.bg or args.fgbg):
        raise DataError("give --bg and --fgbg, or --manifest")
    if not args.manifest and not (args.bg and args.fgbg):
        raise DataError("give both --bg and --fgbg")
    out = Path(args.out)
    check_writable(out, "dir")  # before the model is loaded
    quiet_libraries()
    setup_tracking(args.tracking, writes=False)
    model, trained, encoding = load_model(args.model)
    size = checked_size(model, args.size) or trained or 64
    if args.manifest:
        with write_errors_as(out):
            rows = predict_manifest(
                model, size, Path(args.manifest), out, args.stop_on_error, encoding=encoding
            )
        print(f"predictions: {out / 'predictions.csv'}")
        failed = sum(row["status"] != "ok" for row in rows)
        if failed:
            print(f"fgdepth: {failed} of {len(rows)} pair(s) failed: see the status column",
                  file=sys.stderr)  # fmt: skip
        return 1 if failed else 0
    with write_errors_as(out):
        pair = predict_files(model, size, Path(args.bg), Path(args.fgbg), out, encoding)
    result = {"name": "pair", **pair}
    print(f"{args.fgbg}: foreground distance {distance_text(result['distance'], encoding)}")
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _report(args) -> int:
    from fgdepth.app.report import report_command

    experiments = [e for e in (args.experiment or "").split(",") if e]
    return report_command(
        experiments, args.out, args.include_trials, not args.no_references, args.tracking,
        args.register, args.alias, args.rank_by, args.all_groups,
    )  # fmt: skip


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


def _seed_list(text: str) -> list[int]:
    """``0,1,2``: distinct seeds (whole numbers, 0 or more); argparse reports anything else."""
    seeds = [_whole(part.strip()) for part in text.split(",") if part.strip()]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of distinct seeds (0,1,2)")
    return seeds


def _add_train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=CHOICES,
        default=AUTO,
        help="scale: smoke (seconds), cpu (minutes on a laptop), full (original); "
        "auto (default): full with a GPU, cpu without",
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


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors in one line, as every other user error (not the whole usage,
    which wraps over many lines)."""

    def error(self, message: str):
        self.exit(2, f"fgdepth: {_one_line(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fgdepth", description=DESCRIPTION)
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
    study.add_argument(
        "--seeds", type=_seed_list, default=None, metavar="0,1,2",
        help="train each experiment once per seed; the table gives mean ± std (default: --seed)",
    )  # fmt: skip
    study.add_argument(
        "--minutes-per-run", type=float, default=None, metavar="M",
        help="minutes of training per run, every recipe scaled to fit (default: 1.8 at the cpu "
        "profile; 0: the recipes as written)",
    )  # fmt: skip
    _add_train_options(study)
    study.set_defaults(run=_study)

    tn = sub.add_parser("tune", help="an Optuna study over an experiment's tune block")
    tn.add_argument("--experiment", default="default", help="experiment name or YAML file")
    _add_train_options(tn)
    tn.add_argument("--trials", type=_whole, default=None)
    tn.add_argument(
        "--minutes", type=float, default=None, metavar="M",
        help="a time budget: trials start until M minutes have passed (--trials is then no "
        "limit); the trial under way ends at it. 0: none",
    )  # fmt: skip
    tn.add_argument(
        "--study",
        default=None,
        help="study name (default EXPERIMENT-PROFILE-KEY, KEY: a digest of the data and splits)",
    )
    tn.add_argument(
        "--force-data",
        nargs="?",
        const="yes",
        default="no",
        choices=["yes", "no"],
        help="continue the --study on other data than it was tuned on (recorded in the study)",
    )
    tn.add_argument(
        "--storage",
        default="",
        help="sqlite:///optuna.db (default), journal:FILE, postgresql://user@host/db",
    )
    tn.add_argument("--workers", type=_whole, default=1, help="processes")
    tn.add_argument("--pruner", default=None, help="median (default), hyperband, none")
    tn.add_argument("--sampler", default=None, help="tpe (default), random")
    tn.add_argument("--multi-objective", action="store_true", help="mask IoU, depth RMSE, distance")
    tn.add_argument(
        "--heartbeat", type=int, default=60, help="seconds between a trial's heartbeats (RDB)"
    )
    tn.add_argument("--out", default=None, help="default outputs/tune/STUDY")
    tn.add_argument(
        "--compare", nargs="?", const="yes", default="no", choices=["yes", "no"],
        help="then train the best configuration and the experiment with 2 seeds each and score "
        "both on the test split: tuned_vs_default.csv and .png beside the study's summary",
    )  # fmt: skip
    tn.add_argument(
        "--train-best",
        metavar="PROFILE",
        choices=CHOICES,
        default=None,
        help="then train the best configuration at this profile (auto: full with a GPU, else cpu)",
    )
    tn.set_defaults(run=_tune)

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
    rp.add_argument(
        "--all-groups", action="store_true",
        help="every group of comparable runs (same test data and image size), not the newest only",
    )  # fmt: skip
    rp.add_argument("--no-references", action="store_true")
    rp.add_argument("--register", metavar="NAME", help="register the best run's model")
    rp.add_argument("--alias", default="champion")
    rp.add_argument("--rank-by", default="score", help="score (the tuning formula) or a metric")
    rp.add_argument("--tracking", default="local")
    rp.set_defaults(run=_report)

    ev = sub.add_parser("evaluate", help="metrics of a model on a dataset, as JSON")
    ev.add_argument(
        "--model", required=True, help="runs:/RUN_ID/model, models:/NAME@ALIAS or a checkpoint file"
    )
    ev.add_argument("--data", default=None, help="default: the dataset the run trained on")
    ev.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ev.add_argument(
        "--split-seed", type=_whole, default=None, help="default: the run's data.split_seed"
    )
    ev.add_argument("--test", type=float, default=None, help="default: the run's data.test")
    ev.add_argument("--val", type=float, default=None, help="default: the run's data.val")
    ev.add_argument("--size", type=int, default=None, help="default: the model's training size")
    ev.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="default: the run's (auto: fp32, bf16)",
    )  # fmt: skip
    ev.add_argument("--skip-bad", action="store_true")
    ev.add_argument("--tracking", default="local")
    ev.set_defaults(run=_evaluate)
    return parser


def _one_line(message: str) -> str:
    """A message as one line (a library's text inside it may hold line breaks)."""
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error, already printed in one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.argv = argv
    try:
        return args.run(args)
    except UserError as exc:
        print(f"fgdepth: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write the OS refused (a full disk, ulimit -f, a read-only disk)
        failed = write_failure(exc)
        if failed is None:
            raise
        print(f"fgdepth: {_one_line(str(failed))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C before the handlers, or a second signal
        from fgdepth.engine.stopping import StopNow, exit_code

        if isinstance(exc, StopNow):
            print(f"fgdepth: {exc}", file=sys.stderr)
        return exit_code(getattr(exc, "reason", "SIGINT"))
