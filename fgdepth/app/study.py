"""The main job (``fgdepth study``): train each experiment of the study over one or more
seeds, every run under the same time budget, and compare them in one table and one picture.

The experiments differ in cost per sample (the original network costs about 26 times the
default model), so at a profile with a budget (``BUDGET_MINUTES``) every run trains for the
same minutes (``train_minutes``): the run fits its recipe's samples to them by timed steps of
its own model, fits its later stages again to the pace it trained at, and ends its training at
them (``engine.budget``). Before the first run the study prints how long it expects to take,
and after each run how long is left."""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, replace
from pathlib import Path

from fgdepth import tracking as trk
from fgdepth.app.datasets import builtin_exists, data_path, is_builtin, resolve_dataset
from fgdepth.app.signals import handled_signals, stopped
from fgdepth.app.train import RunSpec, go_on, train
from fgdepth.config import Config, ConfigError, scaled_stages
from fgdepth.data.disk import check_writable
from fgdepth.data.preview import prediction_grid
from fgdepth.engine.checks import load_experiment
from fgdepth.engine.stopping import Interrupted, StopNow
from fgdepth.metrics import LOWER_IS_BETTER, spread, spread_text
from fgdepth.models import model_class

STUDY = [
    "bce", "dice", "ssim", "bce_ssim", "dice_ssim", "staged_transfer", "default",
    "seed_original", "seed_staged",
]  # fmt: skip
TABLE_METRICS = [
    "mask_iou",
    "mask_dice",
    "depth_rmse",
    "depth_delta1",
    "fg_distance_error",
    "depth_iou_seed",
]
# Minutes of training per run where a profile has a budget; elsewhere the recipes as written.
BUDGET_MINUTES = {"cpu": 1.8}
# Beside the samples, a budgeted run tests after its last stage only and validates on 100 rows
# (learning curves only): evaluating the original network costs minutes on a CPU.
BUDGET_OVERRIDES = ["eval.stage_tests=false", "data.val_samples=100"]
# The estimate's constants, measured on a 2-core CPU: a forward pass (evaluation) runs about
# three times the training rate; a run spends about 8 s beside its steps (model, logging,
# pictures); preparing the built-in dataset costs about 10 ms per row and core to generate
# (BENCHMARKS.md: 204 rows/s on 2 cores) and 4 ms per row and core to decode at a model's sizes.
EVAL_SPEEDUP = 3.0
RUN_OVERHEAD_S = 8.0
GENERATE_S_PER_ROW = 0.010
DECODE_S_PER_ROW = 0.004


@dataclass
class StudyRun:
    name: str
    seed: int
    config: Config
    expected_s: float  # training, evaluation and the run's overhead, from timed steps


class Rates:
    """Training rates from a few timed steps, shared by the runs with the same model, size,
    batch and frozen groups (``timing.training_rate``)."""

    def __init__(self, steps: int = 1):
        from fgdepth.engine.fit import default_device

        self.device, self.steps, self.known = default_device(), steps, {}

    def __call__(self, config: Config, stage) -> float:
        from fgdepth.engine.precision import resolve_precision
        from fgdepth.engine.timing import training_rate

        options = tuple(sorted((k, repr(v)) for k, v in config.model.options.items()))
        key = (config.model.name, options, stage.size, stage.batch_size or config.batch_size,
               tuple(stage.freeze), config.precision, config.channels_last)  # fmt: skip
        if key not in self.known:
            stages = scaled_stages(config)  # a run's measured precision, where one was cached
            precision = resolve_precision(config.precision, self.device, config, stages)
            self.known[key] = training_rate(config, stage, self.device, precision, self.steps)
        return self.known[key]


def expected_seconds(config: Config, rate) -> float:
    """Training, validation each epoch, the test pass(es) and the run's overhead."""
    from fgdepth.engine.budget import recipe_seconds, reports_within

    stages = scaled_stages(config)
    train = config.train_minutes * 60 if config.train_minutes else recipe_seconds(config, rate)
    val = sum(config.data.val_samples * s.epochs / rate(config, s) for s in stages)
    if reports_within(config):  # validations within training
        each = sum(config.data.val_samples / rate(config, s) for s in stages) / len(stages)
        val += (reports_within(config) - 1) * each
    tested = stages if config.eval.stage_tests else stages[-1:]
    rows = config.eval.max_samples or 1000  # the test split is capped by the profiles
    test = sum(rows / rate(config, s) for s in tested)
    passes = model_class(config.model.name).eval_passes_of(**config.model.options)
    return train + passes * (val + test) / EVAL_SPEEDUP + RUN_OVERHEAD_S


def data_seconds(configs: list[Config], workers: int) -> float:
    """Preparing the data once: generating the built-in dataset if missing, and decoding the
    rows the runs read (train, and the capped validation and test rows) for each model's
    input sizes."""
    first = configs[0]
    builtin = is_builtin(first)
    rows = first.data.synth.n if builtin else len(resolve_dataset(first))
    generate = GENERATE_S_PER_ROW * rows if builtin and not builtin_exists(first) else 0
    data, cap = first.data, first.eval.max_samples or rows
    read = rows * (1 - data.test - data.val) + min(data.val_samples, rows * data.val)
    read += min(cap, rows * data.test)
    families = {(c.model.name, c.model.options.get("input_scale", 1)) for c in configs}
    return (generate + DECODE_S_PER_ROW * read * len(families)) / max(workers, 1)


def plan_study(names, seeds, profile, data, overrides=(), minutes=None) -> list[StudyRun]:
    """Every (experiment, seed) as a checked config, to train for ``minutes`` when given,
    with its expected seconds; raises ConfigError before anything trains."""
    extra: dict = {}
    if data is not None:
        extra["data"] = {"path": data_path(data)}
    budgeted = [*BUDGET_OVERRIDES, *overrides] if minutes else list(overrides)
    # every experiment is checked before any is timed: a bad name is found at once
    bases = [load_experiment(name, profile, budgeted, extra) for name in names]
    rates, runs = Rates(), []
    for name, base in zip(names, bases, strict=True):
        if minutes:
            base = replace(base, train_minutes=minutes)
            if not any(o.startswith("max_minutes=") for o in overrides):  # a safety stop
                base = replace(base, max_minutes=round(minutes * 1.5 + 1, 2))
        expected = expected_seconds(base, rates)
        runs += [StudyRun(name, s, replace(base, seed=s), expected) for s in seeds]
    return runs


class StudyClock:
    """The study's progress: after each run, the minutes so far and an estimate of those
    left (the remaining runs' estimates, corrected by how the finished ones compared)."""

    def __init__(self, expected: list[float], before_s: float = 0.0, start: float | None = None):
        self.expected, self.before = expected, before_s
        self.start = time.monotonic() if start is None else start  # planning counts as well
        self.done = 0

    def total_minutes(self) -> float:
        return (sum(self.expected) + self.before) / 60

    def finished(self) -> str:
        self.done += 1
        elapsed = time.monotonic() - self.start
        planned = sum(self.expected[: self.done]) + self.before
        ratio = min(max(elapsed / planned, 0.5), 2.0) if planned else 1.0
        left = sum(self.expected[self.done :]) * ratio
        ends = time.strftime("%H:%M", time.localtime(time.time() + left))
        return (
            f"study: {self.done}/{len(self.expected)} runs in {elapsed / 60:.1f} min; "
            f"about {left / 60:.1f} min left (ends about {ends})"
        )

    def minutes(self) -> float:
        return (time.monotonic() - self.start) / 60


def train_runs(runs: list[StudyRun], tracking, experiment_name, system_metrics, clock=None,
               *, stop=None, started: list[str] | None = None):  # fmt: skip
    """Train each run in its own MLflow run; returns a row per run. ``stop()`` names a signal
    once one came: checked before each run, and by the run under way after every batch
    (Interrupted); ``started`` gets each run's id as its run starts."""
    rows = []
    for i, r in enumerate(runs):
        if stop is not None and stop():
            raise Interrupted(stop(), f"the start of run {i + 1}/{len(runs)}")
        print(f"\n== {r.name}, seed {r.seed} ({r.config.profile}): run {i + 1}/{len(runs)} ==",
              flush=True)  # fmt: skip
        spec = RunSpec(
            r.config, tracking, experiment_name, run_name=f"{r.name} seed {r.seed}",
            entry_point=r.name, system_metrics=system_metrics,
        )  # fmt: skip
        note = started.append if started is not None else None
        result, run_id = train(spec, stop=stop, on_run_start=note)
        train_s = result.train_seconds
        rows.append({
            "experiment": r.name, "seed": r.seed, "run_id": run_id,
            "minutes": result.seconds / 60, "train_minutes": train_s / 60,
            "samples": round(result.train_samples_per_s * train_s), "metrics": result.metrics,
            "images": result.stages[-1].images,
        })  # fmt: skip
        if clock is not None:
            print(clock.finished(), flush=True)
    return rows


def grouped(rows) -> dict[str, list[dict]]:
    """The rows by experiment, in their first order."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["experiment"], []).append(r)
    return out


def markdown_table(rows) -> str:
    """A line per experiment: each metric as mean ± std over its seeds (the value alone for
    one seed), the best mean in bold; then the seeds, the training minutes and samples per
    run (means), and the minutes of the whole run."""
    groups = grouped(rows)
    spreads = {e: {m: spread([r["metrics"][m] for r in g]) for m in TABLE_METRICS}
               for e, g in groups.items()}  # fmt: skip
    best = {}
    for m in TABLE_METRICS:
        means = [v[m][0] for v in spreads.values()]
        best[m] = min(means) if m in LOWER_IS_BETTER else max(means)
    header = ["entry point", *TABLE_METRICS, "seeds", "train min", "samples", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, group in groups.items():
        cells = [name]
        for m in TABLE_METRICS:
            text = spread_text(*spreads[name][m])
            cells.append(f"**{text}**" if spreads[name][m][0] == best[m] else text)
        cells.append(",".join(str(r["seed"]) for r in group))
        for key, digits in (("train_minutes", 2), ("samples", 0), ("minutes", 1)):
            cells.append(f"{spread([r[key] for r in group])[0]:,.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_picture(rows, samples: int = 4):
    """Per test sample: the inputs and truth, then each experiment's mask and depth (its
    first seed's run)."""
    firsts = [(name, group[0]["images"]) for name, group in grouped(rows).items()]
    return prediction_grid(firsts, samples)


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith("sqlite:"):
        return (
            f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"
            "   # then open http://127.0.0.1:5000"
        )
    return f"open {tracking_uri} in a browser"


def design_line(runs: list[StudyRun], minutes: float | None) -> str:
    """How the runs were made comparable, for the table's reader."""
    seeds = sorted({r.seed for r in runs})
    first = runs[0].config
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    if minutes:
        how = (f"every run trained for the same {minutes:g} minutes (its recipe's samples "
               "fitted to them by timed steps and again before each stage, training ended at "
               "them; 'train min' and 'samples' are what it trained)")  # fmt: skip
    else:
        how = "every run trained its recipe as written at the profile"
    return f"Profile `{first.profile}`, {seeds_text}; {how}."


def _write(out: Path, table: str, rows) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    comparison_picture(rows).save(out / "comparison.png")
    print(f"\ntable and picture: {out}/comparison.md, {out}/comparison.png")


def check_minutes(minutes: float | None) -> None:
    """``--minutes-per-run``: None (the profile's budget), 0 (the recipes as written) or more."""
    if minutes is not None and not (math.isfinite(minutes) and minutes >= 0):
        raise ConfigError(
            f"--minutes-per-run: {minutes} is not allowed (0 or more; 0: the recipes as written)"
        )


def _go_on(started: list[str], total: int, tracking: str, argv) -> str:
    """After a signal: the run it stopped, if one was under way, and how to continue that
    run; the study keeps no progress of its own, so its command starts it again."""
    again = shlex.join(["fgdepth", *argv]) if argv else "the same fgdepth study command"
    text = f"the study has no resume: {again} starts it again"
    if started and trk.run_status(started[-1]) == "KILLED":
        run = f"run {len(started)}/{total} ended KILLED"
        text = f"{run} ({go_on(RunSpec(None, tracking), started[-1])}); {text}"
    return text


def study_command(names, profile, data, seeds, tracking, experiment_name, out,
                  system_metrics=True, overrides=(), minutes=None, argv=()) -> int:  # fmt: skip
    """``fgdepth study``: plan and time every run, say how long the study should take, train,
    then print the table and write it and the picture under ``out``. ``minutes``: training
    minutes per run (None: the profile's budget, 0: the recipes as written). ``argv``: the
    command's words, to say how to start it again after a signal."""
    from fgdepth.data.modes import decode_workers

    check_minutes(minutes)
    trk.quiet_libraries()
    # a bad --tracking, a server that does not answer, a place it cannot write: found before
    # the study starts
    trk.setup_tracking(tracking)
    for folder in (RunSpec.checkpoint_dir, out):
        if folder:
            check_writable(folder, "dir")
    start = time.monotonic()
    minutes = BUDGET_MINUTES.get(profile) if minutes is None else minutes or None
    with handled_signals() as stop:  # a signal stops the study and says how to go on
        started: list[str] = []
        try:
            runs = plan_study(names or STUDY, seeds or [0], profile, data, overrides, minutes)
            workers = decode_workers(runs[0].config.data.workers)
            before = data_seconds([r.config for r in runs], workers)
            clock = StudyClock([r.expected_s for r in runs], before, start)
            print(f"study: {len(runs)} runs ({', '.join(dict.fromkeys(r.name for r in runs))}); "
                  f"expected to take about {math.ceil(clock.total_minutes())} minutes on this "
                  "machine", flush=True)  # fmt: skip
            rows = train_runs(runs, tracking, experiment_name, system_metrics, clock, stop=stop,
                              started=started)  # fmt: skip
        except (Interrupted, StopNow) as exc:
            total = len(names or STUDY) * len(seeds or [0])
            return stopped(exc, _go_on(started, total, tracking, argv))
        _compare(runs, rows, minutes, clock, out)
    return 0


def _compare(runs: list[StudyRun], rows, minutes, clock: StudyClock, out) -> None:
    """The table (printed, and with the picture under ``out``) and where to see the runs."""
    table = f"{design_line(runs, minutes)}\n\n{markdown_table(rows)}"
    took = f"The study took {clock.minutes():.1f} minutes ({len(rows)} runs)."
    print(f"\n{table}\n\n{took}")
    if out:
        _write(Path(out), f"{table}\n\n{took}", rows)
    print(f"\nCompare the runs in the MLflow UI:\n  {ui_hint(trk.tracking_uri())}")
