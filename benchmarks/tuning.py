"""Does tuning pay? A study with a time budget on each data family, then its best configuration
against the default recipe on the test split, which no trial saw.

Per family (``benchmarks/families.py``: built-in, street, room) it runs what a user would type,
``fgdepth tune --experiment default --profile cpu --data FAMILY --minutes M --compare``, in a
subprocess with its own Optuna and MLflow stores; every trial trains for the default recipe's
minutes, and the comparison trains the best configuration and the default again with seeds 0
and 1 each (``fgdepth.app.tuned``). The section shows each family's ``tuned_vs_default.csv``:
every headline metric and the study's score, mean ± standard deviation, the seeds' spread and
the verdict (better or worse only beyond the spread).

    python benchmarks/tuning.py --minutes 60                 # every family; BENCHMARKS.md
    python benchmarks/tuning.py --minutes 20 --families room # one family, a shorter study;
                                                             # the other families' sections stay
    python benchmarks/tuning.py --from-results --families room
                                                             # its section again from the saved
                                                             # results.json, running nothing
    python benchmarks/tuning.py --pruners --minutes 20 --families room
                                                             # median / hyperband / none under
                                                             # the same budget, room data
    python benchmarks/tuning.py --smoke                      # seconds; prints only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import families  # noqa: E402
from benchmarks.common import commit, machine, publish, table  # noqa: E402
from fgdepth.tuning import RECIPE, best_trial, runs_of  # noqa: E402

ROWS = 12000  # each family's rows, as the quality protocol writes them
PRUNERS = ("median", "hyperband", "none")


def run_study(folder: Path, data: str | None, minutes: float, profile: str, extra=()) -> dict:
    """One ``fgdepth tune`` in ``folder`` (its stores, summary and log); what it found."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    env.pop("MLFLOW_RUN_ID", None)
    storage = f"sqlite:///{folder}/optuna.db"
    cmd = [
        sys.executable, "-m", "fgdepth", "tune", "--experiment", "default", "--profile",
        profile, "--minutes", str(minutes), "--storage", storage, "--study", "bench",
        "--out", str(folder / "study"), "--no-system-metrics", *extra,
    ]  # fmt: skip
    if data:
        cmd += ["--data", data]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True)
    wall = (time.perf_counter() - start) / 60
    (folder / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name="bench", storage=storage)
    states = [t.state.name for t in study.trials]
    compared = folder / "study" / "tuned_vs_default.csv"
    best, value = best_trial(study)  # with reruns: the best mean of a leader's runs
    recipe = best.user_attrs.get(RECIPE)  # the study's trial 0
    reruns = {n: v for n, v in runs_of(study).items() if len(v) > 1}
    return {
        "best_is_recipe": recipe is not None,
        "reruns": {n: [round(x, 4) for x in v] for n, v in reruns.items()},
        "minutes": wall,
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best_value": value,
        "best_trial": best.number,
        "best_params": best.params,
        "expected": next((x for x in done.stdout.splitlines() if x.startswith("each trial")), ""),
        "compare": list(csv.DictReader(compared.open())) if compared.exists() else [],
    }


def family_table(result: dict) -> str:
    rows = [
        [r["metric"], f"{float(r['default_mean']):.4f} ± {float(r['default_std']):.4f}",
         f"{float(r['tuned_mean']):.4f} ± {float(r['tuned_std']):.4f}",
         f"{float(r['spread']):.4f}", r["verdict"]]
        for r in result["compare"]
    ]  # fmt: skip
    return table(["metric", "default (2 seeds)", "tuned (2 seeds)", "spread", "verdict"], rows)


def _reruns(result: dict) -> list[str]:
    """The leaders trained again: each one's validation scores, the chosen one marked."""
    if not result["reruns"]:
        return []
    said = "; ".join(
        f"trial {n}{' (chosen)' if int(n) == result['best_trial'] else ''}: "
        + " / ".join(f"{v:.4f}" for v in values)
        for n, values in result["reruns"].items()
    )
    return [f"Leaders trained again with another seed (validation score of each run): {said}."]


INTRO = """## Tuning: does a study beat the default?

Each family: `fgdepth tune --experiment default --profile cpu --data FAMILY --minutes M
--compare`, run by `python benchmarks/tuning.py --minutes M --families FAMILY` with its own
Optuna and MLflow stores; every trial and every compared run trains for the default recipe's
minutes, and the comparison is on the test split (which no trial saw), seeds 0 and 1 each. A
metric is better or worse only beyond the seeds' spread. Each family's section names its
machine, commit and command."""


def family_section(family: str, result: dict, data_root: Path) -> str:
    """One family's study: machine, command, data, trials, the leaders' runs, the table."""
    shown = (
        "the built-in data"
        if result.get("data", "") is None  # smoke: the built-in generator, no folder
        else f"`{families.command(data_root, family, ROWS)}`"
    )
    at = "".join(f", {k} {result[k]}" for k in ("date", "commit") if result.get(k))
    command = f"python benchmarks/tuning.py --minutes {result['budget']:g} --families {family}"
    parts = [
        f"### {family}",
        "",
        f"Machine: {result.get('machine', 'not recorded')}; precision `auto` (it times both "
        f"and picks per run){at}. Command: `{command}`.",
        "",
        f"Data: {shown}. {result['trials']} trials ({result['complete']} complete, "
        f"{result['pruned']} pruned) in {result['minutes']:.1f} min including the comparison; "
        f"best trial's values: `{result['best_params']}`.",
        f"{result['expected']}.",
        *_reruns(result),
        "",
        family_table(result),
    ]
    if result["best_is_recipe"]:
        parts += [
            "",
            "No trial beat the recipe itself (the study's first trial): the two columns are two "
            "pairs of runs of one recipe, and their difference is the noise of a run at this "
            "budget.",
        ]
    return "\n".join(parts)


def pays(args, out: Path) -> None:
    """A study per family (or, with ``--from-results``, the results each one saved), each
    family's section written in place: the other families' sections stay as they are."""
    names = ["built-in"] if args.smoke else args.families.split(",")
    profile = "smoke" if args.smoke else "cpu"
    publish("tuning", INTRO, write=not args.smoke)
    order = ["tuning", *(f"tuning-{n}" for n in families.NAMES)]  # each after the one before
    for family in names:
        saved = out / family / "results.json"
        if args.from_results:
            result = json.loads(saved.read_text())
        else:
            data = None if args.smoke else families.dataset(Path(args.data_root), family, ROWS)
            data = data and str(data)
            stamp = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "commit": commit()}
            result = run_study(out / family, data, args.minutes, profile, ["--compare"])
            result.update(data=data, budget=args.minutes, **stamp)
            saved.write_text(json.dumps(result, indent=2, default=str))
        result.setdefault("budget", args.minutes)
        body = family_section(family, result, Path(args.data_root))
        name = f"tuning-{family}"
        after = order[order.index(name) - 1] if name in order else None
        publish(name, body, write=not args.smoke, after=after)


def pruners(args, out: Path) -> str:
    """A study per pruner, each with the same budget on the first of ``--families``."""
    profile = "smoke" if args.smoke else "cpu"
    family = args.families.split(",")[0]
    data = None if args.smoke else str(families.dataset(Path(args.data_root), family, ROWS))
    rows = []
    for name in PRUNERS:
        r = run_study(out / f"pruner-{name}", data, args.minutes, profile, ["--pruner", name])
        rows.append(
            [name, r["trials"], r["complete"], r["pruned"], f"{r['minutes']:.1f}",
             f"{r['best_value']:.4f}", "yes" if r["best_is_recipe"] else "no"]
        )  # fmt: skip
    command = (
        f"python benchmarks/tuning.py --pruners --minutes {args.minutes:g} --families {family}"
    )
    header = ["pruner", "trials", "complete", "pruned", "minutes", "best validation score",
              "best is the recipe"]  # fmt: skip
    return "\n".join([
        "## Tuning: pruners under the same time budget", "",
        f"Machine: {machine()}.",
        f"Command: `{command}` ({'the built-in' if data is None else family} data, profile "
        f"{profile}).", "",
        table(header, rows),
    ])  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--minutes", type=float, default=60.0, help="each study's budget")
    parser.add_argument("--families", default=",".join(families.NAMES))
    parser.add_argument("--pruners", action="store_true", help="compare the pruners instead")
    parser.add_argument(
        "--from-results", action="store_true",
        help="write the sections from each family's saved results.json, running nothing",
    )  # fmt: skip
    parser.add_argument("--data-root", default=str(ROOT / "outputs" / "bench-quality"))
    parser.add_argument("--out", default="outputs/bench-tuning")
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes = 0.2
    out = Path(args.out).resolve()
    if args.pruners:
        publish("tuning-pruners", pruners(args, out), write=not args.smoke)
    else:
        pays(args, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
