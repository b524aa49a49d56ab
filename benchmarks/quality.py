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

from benchmarks import street_data  # noqa: E402
from benchmarks.common import auto_precision, machine, publish, table  # noqa: E402
from fgdepth.app.datasets import resolve_dataset  # noqa: E402
from fgdepth.baselines import reference_metrics  # noqa: E402
from fgdepth.config import load_config, scaled_stages  # noqa: E402
from fgdepth.data import build_cache, build_model_cache  # noqa: E402
from fgdepth.engine.evaluate import predict, to_device  # noqa: E402
from fgdepth.engine.plan import split_indices  # noqa: E402
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
    model, _ = load_logged_model(f"runs:/{run_id}/model")
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
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "cpu"
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
