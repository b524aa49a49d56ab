"""Quality on data fgdepth did not generate: the default recipe at the `cpu` profile, timed.

Runs what a user would type, ``fgdepth train --config experiments/default.yaml --profile cpu
--data PATH``, as a subprocess with a fresh tracking store and an empty decode cache, so the
clock counts everything from the command's start: start-up, checking and decoding the data,
training, validation and the test evaluation. The dataset is the street dataset written by
``benchmarks/street_data.py`` (independent of the built-in generator), or any dataset in the
documented format given with ``--data``. The test split's metrics are set against the targets
(mask IoU >= 0.93, depth RMSE <= 0.04, 5 minutes) and against the references on the same rows:
background subtraction for the mask and the mean depth map for depth.

    python benchmarks/quality.py                  # writes the 'quality' section of BENCHMARKS.md
    python benchmarks/quality.py --data PATH      # another dataset (folder or zip)
    python benchmarks/quality.py --seed 1 --set model.width=24 --label "width 24"
                                                  # a variant: another row of the same table
    python benchmarks/quality.py --smoke          # seconds; prints only
    python benchmarks/quality.py --render         # the section again from the saved results
    python benchmarks/quality.py --protocol --set loss.depth.fg_l1=2 --label "fg_l1 2"
                                                  # a change against the default: every data
                                                  # family x 2 seeds, a verdict per metric

The protocol (``--protocol``) is how a recipe or model change is judged: the variant and the
default are trained on each data family (``benchmarks/families.py``: built-in, street, room) with
seeds 0 and 1, and each of mask IoU, depth RMSE and the foreground's distance error gets a
verdict per family: *better* or *worse* when the means differ by more than the seeds' spread
(the larger of the two recipes' ranges over the seeds), else *same*. A change is accepted when
no family gets worse on any of the three. The default's runs are reused while the code and the
experiments are unchanged (a digest of ``fgdepth/`` and ``experiments/``).

Each variant is kept in OUT/PROFILE/LABEL/results.json; the section shows every variant
measured into OUT, in the order they were measured (delete a folder to drop its row).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import families, street_data  # noqa: E402
from benchmarks.common import auto_precision, commit, machine, publish, table  # noqa: E402
from fgdepth.app.datasets import resolve_dataset  # noqa: E402
from fgdepth.baselines import reference_metrics  # noqa: E402
from fgdepth.config import load_config, scaled_stages  # noqa: E402
from fgdepth.data import build_cache, build_model_cache  # noqa: E402
from fgdepth.engine.evaluate import predict, to_device  # noqa: E402
from fgdepth.engine.plan import split_indices  # noqa: E402
from fgdepth.metrics import verdict  # noqa: E402
from fgdepth.tracking import load_logged_model  # noqa: E402

TARGETS = {"mask_iou": 0.93, "depth_rmse": 0.04, "minutes": 5.0}
METRICS = ["mask_iou", "mask_iou_image", "depth_rmse", "depth_delta1", "fg_distance_error"]


def variant_args(variant: dict, profile: str, data: Path | str) -> list[str]:
    """``fgdepth train`` arguments for a variant: its config, seed, overrides and time limit."""
    args = ["train", "--config", variant["config"], "--profile", profile, "--data", str(data),
            "--seed", str(variant["seed"])]  # fmt: skip
    for override in variant["set"]:
        args += ["--set", override]
    if variant["max_minutes"] == 0:  # no limit: fgdepth's --max-minutes 0 keeps the profile's
        args += ["--set", "max_minutes=null"]
    elif variant["max_minutes"] is not None:
        args += ["--max-minutes", f"{variant['max_minutes']:g}"]
    return args


def train(data: Path, profile: str, out: Path, variant: dict) -> dict:
    """The CLI run, timed from outside; its printed result plus ``wall_minutes``."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{out / 'mlflow.db'}"
    env["FGDEPTH_CACHE"] = str(out / "cache")
    command = [sys.executable, "-m", "fgdepth", *variant_args(variant, profile, data)]
    start = time.monotonic()
    # run where the store is: the run's artifacts (pictures, model) go beside it
    proc = subprocess.run(command, cwd=out, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    result = json.loads(proc.stdout[proc.stdout.rindex("\n{") :])
    return {**result, "wall_minutes": wall / 60}


class TestRows:
    """The run's own data, split as the run split it: the dataset, its rows and the decode
    cache at the last stage's size (what the run was scored at), prepared once."""

    def __init__(self, data: Path, profile: str, out: Path):
        config = load_config("default", profile, extra={"data": {"path": str(data)}})
        self.dataset = resolve_dataset(config)
        self.rows = split_indices(config, self.dataset)
        self.size = scaled_stages(config)[-1].size
        self.cache = build_cache(self.dataset, self.size, root=out / "cache", quiet=True)


def references(test: TestRows) -> dict:
    """Both references on the run's test rows."""
    refs = reference_metrics(test.cache, test.rows["train"], test.rows["test"])
    return {**refs["background_subtraction"], **refs["mean_depth"], "size": test.size,
            "samples": len(test.dataset), "test": len(test.rows["test"])}  # fmt: skip


def mask_errors(run_id: str, test: TestRows, out: Path) -> dict:
    """Where the run's mask is wrong on its test rows: the share of wrong pixels within one
    pixel of the true outline, the share of foregrounds under 0.5 % of the image, and the
    pooled IoU at other thresholds."""
    import mlflow
    import torch
    import torch.nn.functional as F

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    model, *_ = load_logged_model(f"runs:/{run_id}/model")  # (model, size, encoding)
    rows = test.rows["test"]
    cache = build_model_cache(test.dataset, test.size, model.input_scale, root=out / "cache")
    thresholds = (0.3, 0.5, 0.7)
    inter, union = torch.zeros(len(thresholds)), torch.zeros(len(thresholds))
    outline = wrong = small = 0
    for start in range(0, len(rows), 64):
        batch = to_device(cache.batch(rows[start : start + 64]), torch.device("cpu"))
        prob, _ = predict(model, batch["fg_bg"], batch["bg"])
        truth = batch["mask"] > 0.5
        for k, t in enumerate(thresholds):
            inter[k] += (truth & (prob > t)).sum()
            union[k] += (truth | (prob > t)).sum()
        t = truth.float()
        edge = (F.max_pool2d(t, 3, 1, 1) > 0) & (-F.max_pool2d(-t, 3, 1, 1) < 1)
        err = truth ^ (prob > 0.5)
        outline, wrong = outline + (err & edge).sum().item(), wrong + err.sum().item()
        small += (t.mean((1, 2, 3)) < 0.005).sum().item()
    return {
        "outline_share": outline / max(wrong, 1),
        "small_share": small / len(rows),
        "iou_by_threshold": {
            str(t): (inter[k] / union[k]).item() for k, t in enumerate(thresholds)
        },
    }


def render(results: list[dict]) -> str:
    """One row per variant, then the references and the targets; where each variant's mask
    is wrong."""
    first = results[0]
    refs = first["references"]
    rows, notes = [], []
    for r in results:
        run, m = r["run"], r["run"]["metrics"]
        rows.append([r["label"]] + [f"{m[k]:.3f}" for k in METRICS]
                    + [f"{run['wall_minutes']:.2f}", f"{run['minutes']:.2f}"])  # fmt: skip
        met = [m["mask_iou"] >= TARGETS["mask_iou"], m["depth_rmse"] <= TARGETS["depth_rmse"],
               run["wall_minutes"] <= TARGETS["minutes"]]  # fmt: skip
        e = r["errors"]
        ious = ", ".join(f"{v:.3f} at {k}" for k, v in e["iou_by_threshold"].items())
        notes.append(
            f"- {r['label']}: targets {'all met' if all(met) else 'not all met'}; "
            f"`python benchmarks/quality.py {r['command']}`; {e['outline_share']:.0%} of the "
            f"wrong test pixels lie within one pixel of the true outline; pooled IoU by "
            f"threshold {ious}."
        )
    rows.append(["references (bg subtraction / mean depth)"]
                + [f"{refs[k]:.3f}" for k in METRICS] + ["-", "-"])  # fmt: skip
    rows.append(["target", f">= {TARGETS['mask_iou']}", "", f"<= {TARGETS['depth_rmse']}", "",
                 "", f"<= {TARGETS['minutes']:g}", ""])  # fmt: skip
    return "\n".join([
        "## Quality on data fgdepth did not generate",
        "",
        f"Machine: {machine()}; {threads()} threads; each row in the precision its code's "
        f"`precision: auto` chose here (the current code: {auto_precision()}).",
        f"Data: {first['data']} ({refs['samples']} samples; each run trains on its train split, "
        f"and the test split, {refs['test']} rows at {refs['size']} px, is scored here). "
        f"Each row is the whole `fgdepth train --config CONFIG --profile {first['profile']} "
        "--data PATH` command, timed from outside from a cold decode cache (minutes), and the "
        "training run itself as it reports (run minutes).",
        "",
        table(["", *METRICS, "minutes", "run minutes"], rows),
        "",
        *notes,
        "",
        f"Small foregrounds: {first['errors']['small_share']:.0%} of the test foregrounds cover "
        "less than 0.5 % of the image.",
    ])  # fmt: skip


def measure(data: Path | None, root: Path, profile: str, out: Path, variant: dict) -> dict:
    """Train in a fresh store from a cold cache, then score the references and the errors."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    description = f"`{data}`"
    if data is None:
        n = 60 if profile == "smoke" else 12000
        data = root / f"street-n{n}"
        shown = data.relative_to(ROOT) if data.is_relative_to(ROOT) else data
        description = f"street scenes from `python benchmarks/street_data.py {shown} --n {n}`"
        if not (data / "manifest.csv").exists():
            street_data.write(data, n, seed=1, workers=1 if profile == "smoke" else 2)
    data = data.resolve()
    run = train(data, profile, out, variant)
    test = TestRows(data, profile, out)
    errors = mask_errors(run["run_id"], test, out)
    return {"run": run, "references": references(test), "errors": errors,
            "data": description, "profile": profile}  # fmt: skip


# --- the protocol: a variant against the default on every family, two seeds ------------------

HEADLINE = {"mask_iou": "higher", "depth_rmse": "lower", "fg_distance_error": "lower"}
FLOORS = {  # the reference rows each headline metric must beat, from ``reference_metrics``
    "mask_iou": ["background_subtraction"],
    "depth_rmse": ["mean_depth"],
    "fg_distance_error": ["constant_distance", "silhouette_geometry"],
}


def code_digest() -> str:
    """A digest of what a run's result depends on: the package and the experiments."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "fgdepth").rglob("*.py"), *(ROOT / "experiments").glob("*")]):
        digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def floors_of(refs: dict) -> dict[str, str]:
    """The floors' values per headline metric, as text."""
    out = {}
    for metric, names in FLOORS.items():
        found = [f"{name} {refs[name][metric]:.4f}" for name in names if name in refs]
        out[metric] = "; ".join(found) or "-"
    return out


def protocol_run(family: str, data: Path, root: Path, profile: str, recipe: dict, seed: int,
                 digest: str | None) -> dict | None:  # fmt: skip
    """One recipe on one family and seed: the saved result when it was measured on this code,
    else a fresh run (its test metrics, minutes and the reference rows on its test split).
    With ``digest`` None, the saved result whatever its code, or None."""
    folder = root / family / recipe["slug"] / f"seed{seed}"
    saved_file = folder / "results.json"
    if saved_file.exists():
        saved_result = json.loads(saved_file.read_text())
        same = saved_result["digest"] == digest and saved_result["set"] == recipe["set"]
        if same or digest is None:
            return saved_result
    if digest is None:  # --render: what was measured, nothing new
        return None
    variant = {"config": recipe["config"], "seed": seed, "set": recipe["set"],
               "max_minutes": recipe["max_minutes"]}  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"protocol: {recipe['label']} on {family}, seed {seed}", flush=True)
    run = train(data, profile, folder, variant)
    test = TestRows(data, profile, folder)
    refs = reference_metrics(test.cache, test.rows["train"], test.rows["test"])
    result = {"digest": digest, "commit": commit(), "set": recipe["set"], "metrics": run["metrics"],
              "minutes": run["wall_minutes"], "references": refs, "test": len(test.rows["test"]),
              "size": test.size}  # fmt: skip
    shutil.rmtree(folder / "cache", ignore_errors=True)  # decoded arrays: GBs, not results
    saved_file.write_text(json.dumps(result, indent=2))
    return result


def protocol_table(family: str, runs: dict, labels: tuple[str, str], command: str) -> str:
    """One family's table: each headline metric per seed for both recipes, the spread, the
    verdict and the floors."""
    default, variant = (runs[label] for label in labels)
    floors = floors_of(default[0]["references"])
    rows, verdicts = [], {}
    for metric, direction in HEADLINE.items():
        a = [r["metrics"][metric] for r in default]
        b = [r["metrics"][metric] for r in variant]
        spread, said = verdict(a, b, direction == "lower")
        verdicts[metric] = said
        rows.append([metric, " / ".join(f"{v:.4f}" for v in a), " / ".join(f"{v:.4f}" for v in b),
                     f"{spread:.4f}", said, floors[metric]])  # fmt: skip
    minutes = [
        f"{sum(r['minutes'] for r in runs[label]) / len(runs[label]):.2f}" for label in labels
    ]
    rows.append(["minutes (mean)", *minutes, "", "", ""])
    first = default[0]
    commits = sorted({r.get("commit", "?") for rs in runs.values() for r in rs})
    return "\n".join(
        [
            f"### {family}: {first['test']} test rows at {first['size']} px",
            "",
            f"Data: `{command}`. Code: {', '.join(commits)}.",
            "",
            table(
                [
                    "metric",
                    f"{labels[0]} (seeds)",
                    f"{labels[1]} (seeds)",
                    "spread",
                    "verdict",
                    "floors",
                ],
                rows,
            ),  # fmt: skip
        ]
    ), verdicts


def protocol(args, profile: str) -> int:
    """Train the default and the variant on every family with each seed; print and publish
    the verdicts."""
    data_root = args.out.resolve()
    root = data_root / profile / "protocol"
    n = 60 if profile == "smoke" else 12000
    digest = None if args.render else code_digest()
    default_label = " ".join(["default", *args.baseline_set])
    baseline = {"config": "default", "set": args.baseline_set, "max_minutes": args.max_minutes,
                "label": args.baseline_label or default_label}  # fmt: skip
    variant = {"config": args.config, "set": args.set, "max_minutes": args.max_minutes,
               "label": args.label or f"{args.config} {' '.join(args.set)}".strip()}  # fmt: skip
    for recipe in (baseline, variant):
        recipe["slug"] = "".join(c if c.isalnum() else "-" for c in recipe["label"].lower())
    if baseline["slug"] == variant["slug"]:
        raise SystemExit("quality: the variant is the baseline: give --set, --config or --label")
    sections, verdicts, measured = [], {}, 0
    for family in args.families.split(","):
        workers = 1 if profile == "smoke" else 2
        data = (families.folder(data_root, family, n) if args.render else
                families.dataset(data_root, family, n, workers))  # fmt: skip
        runs = {baseline["label"]: [], variant["label"]: []}
        for seed in args.seeds:  # seed by seed: a stopped protocol leaves pairs to compare
            for recipe in (baseline, variant):
                result = protocol_run(family, data, root, profile, recipe, seed, digest)
                if result is not None:
                    runs[recipe["label"]].append(result)
        measured += sum(len(r) for r in runs.values())
        if not all(runs.values()):
            sections.append(f"### {family}: not measured yet")
            continue
        text, verdicts[family] = protocol_table(
            family,
            runs,
            (baseline["label"], variant["label"]),
            families.command(data_root, family, n),
        )
        sections.append(text)
    worse = [f"{m} on {f}" for f, v in verdicts.items() for m, said in v.items() if said == "worse"]
    decision = ("accepted: no family gets worse on a headline metric" if not worse
                else "not accepted: worse on " + ", ".join(worse))  # fmt: skip
    expected = 2 * len(args.seeds) * len(args.families.split(","))
    if measured < expected:  # a protocol stopped early judges nothing
        decision = f"none yet: {measured} of {expected} runs measured ({decision} so far)"
    elif len(args.seeds) < 2:  # one seed: any difference passes for one beyond the spread
        decision = f"none: one seed gives no spread ({decision} on the raw differences)"
    shown = [a for a in (args.argv or sys.argv[1:]) if a != "--render"]  # how it was measured
    command = " ".join(a if " " not in a else repr(a) for a in shown)
    body = "\n".join([
        f"## Protocol: {variant['label']} against {baseline['label']}",
        "",
        f"Machine: {machine(auto_precision(), threads())}. Command: "
        f"`python benchmarks/quality.py {command}`; each run is the whole `fgdepth train "
        f"--profile {profile} --data PATH` command, seeds {', '.join(map(str, args.seeds))}.",
        f"Verdict: **{decision}**. A metric is better or worse when the means differ by more "
        "than the spread (the larger range over the seeds of the two recipes).",
        "",
        "\n\n".join(sections),
    ])  # fmt: skip
    # each change judged keeps a section of its own in BENCHMARKS.md
    publish(f"protocol-{variant['slug']}", body, write=not args.smoke and bool(sections))
    return 0 if not worse and measured == expected and len(args.seeds) > 1 else 1


def threads() -> int:
    """The threads the training subprocess uses: torch's default, one per core it may run on."""
    return len(os.sched_getaffinity(0))


def saved(root: Path) -> list[dict]:
    """Every variant measured into ROOT, oldest first."""
    found = [json.loads(p.read_text()) for p in root.glob("*/results.json")]
    return sorted(found, key=lambda r: r["finished"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--data", type=Path, help="a dataset (default: the street dataset)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench-quality")
    parser.add_argument(
        "--render", action="store_true", help="only write the section again from OUT's results"
    )
    parser.add_argument("--config", default="default", help="the experiment (default: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for this variant (repeatable)")  # fmt: skip
    parser.add_argument("--label", help="the variant's row (default: config and seed)")
    parser.add_argument(
        "--max-minutes", type=float,
        help="the run's time limit (default: the profile's; 0: none, for a slower machine)",
    )  # fmt: skip
    parser.add_argument("--protocol", action="store_true",
                        help="the variant against the default on each family")  # fmt: skip
    parser.add_argument("--families", default=",".join(families.NAMES),
                        help="with --protocol: the data families (comma-separated)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="with --protocol: the seeds (default: 0 1)")  # fmt: skip
    parser.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE",
                        help="with --protocol: an override of the default compared to")  # fmt: skip
    parser.add_argument("--baseline-label", help="with --protocol: the baseline's name")
    args = parser.parse_args(argv)
    args.argv = argv
    profile = "smoke" if args.smoke else "cpu"
    if args.protocol:
        return protocol(args, profile)
    root = args.out.resolve() / profile  # the run works in OUT: a relative path would move
    if not args.render:
        variant = {"config": args.config, "seed": args.seed, "set": args.set,
                   "max_minutes": args.max_minutes}  # fmt: skip
        label = args.label or f"{args.config}, seed {args.seed}"
        folder = root / "".join(c if c.isalnum() else "-" for c in label.lower())
        result = measure(args.data, args.out, profile, folder, variant)
        command = " ".join(a if " " not in a else repr(a) for a in (argv or sys.argv[1:]))
        result.update(label=label, command=command, finished=time.time(),
                      machine=machine(auto_precision(), threads()))  # fmt: skip
        (folder / "results.json").write_text(json.dumps(result, indent=2))
    publish("quality", render(saved(root)), write=not args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
