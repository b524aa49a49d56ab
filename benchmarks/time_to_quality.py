"""Time to quality: wall-clock until the validation split reaches a mask IoU and a depth RMSE,
for the original network with the original recipe against the default model with the default
recipe, both at the `cpu` profile on the built-in data, each given the same time limit.

Each run trains in this process (the engine alone: no tracking) and stops at the first epoch
whose validation metrics meet both targets, or at the limit. The clock counts everything a run
does from its start: data preparation, training and each epoch's validation.

python benchmarks/time_to_quality.py               # 15 minutes at most each; writes BENCHMARKS.md
python benchmarks/time_to_quality.py --smoke       # seconds; prints only
python benchmarks/time_to_quality.py --render      # the section again from the saved results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import auto_precision, machine, publish, table  # noqa: E402
from fgdepth.app.datasets import resolve_dataset  # noqa: E402
from fgdepth.config import load_config  # noqa: E402
from fgdepth.engine import Callback, fit  # noqa: E402
from fgdepth.engine.fit import Interrupted  # noqa: E402

RUNS = [("seed", "seed_original"), ("unet", "default")]


class Clock(Callback):
    """The validation metrics after each epoch, with the seconds since the run started."""

    def __init__(self, iou: float, rmse: float, minutes: float):
        self.iou, self.rmse, self.limit = iou, rmse, minutes * 60
        self.start = time.monotonic()
        self.curve: list[dict] = []
        self.reached: float | None = None

    def on_epoch_end(self, result, model):
        seconds = time.monotonic() - self.start
        val = result.val
        self.curve.append({"seconds": seconds, "mask_iou": val["mask_iou"],
                           "depth_rmse": val["depth_rmse"]})  # fmt: skip
        if self.reached is None and val["mask_iou"] >= self.iou and val["depth_rmse"] <= self.rmse:
            self.reached = seconds

    def stop(self):
        """Checked after every batch: the limit stops a run within an epoch too."""
        if self.reached is not None:
            return "target reached"
        return "time limit" if time.monotonic() - self.start > self.limit else None


def run(experiment: str, profile: str, minutes: float, iou: float, rmse: float, sets) -> dict:
    config = load_config(experiment, profile, [*sets, "max_minutes=null"])
    dataset = resolve_dataset(config)  # generated before the clock starts, once for both
    clock = Clock(iou, rmse, minutes)
    try:
        fit(config, dataset, [clock], stop=clock.stop)
    except Interrupted:
        pass
    return {"experiment": experiment, "model": config.model.name, "reached": clock.reached,
            "seconds": time.monotonic() - clock.start, "curve": clock.curve}  # fmt: skip


def render(results: list[dict], minutes: float, iou: float, rmse: float, profile: str) -> str:
    rows = []
    for r in results:
        curve = ", ".join(
            f"{p['seconds'] / 60:.1f}: {p['mask_iou']:.3f} / {p['depth_rmse']:.3f}"
            for p in r["curve"]
        )
        rows.append([
            r["model"], r["experiment"], f"{r['seconds'] / 60:.1f}",
            f"{r['reached'] / 60:.1f}" if r["reached"] else (
                f"not within {minutes:g}" if r["seconds"] >= minutes * 60 else
                "not reached (the recipe ended)"
            ),
            curve or "none",
        ])  # fmt: skip
    seed, unet = results
    if unet["reached"] and seed["reached"]:
        verdict = f"The default model reached the targets {seed['reached'] / unet['reached']:.1f}x"
        verdict += " sooner."
    elif unet["reached"]:
        verdict = (
            f"The seed network did not reach the targets within {minutes:g} minutes: the default "
            f"model was at least {minutes * 60 / unet['reached']:.1f}x sooner."
        )
    else:
        verdict = "Neither run reached the targets."
    if seed["curve"] and unet["curve"]:
        s, u = seed["curve"][-1], unet["curve"][-1]
        better = u["mask_iou"] > s["mask_iou"] and u["depth_rmse"] < s["depth_rmse"]
        verdict += (
            f" The default model's last validation ({u['seconds'] / 60:.1f} min: mask_iou "
            f"{u['mask_iou']:.3f}, depth_rmse {u['depth_rmse']:.3f}) against the seed network's "
            f"({s['seconds'] / 60:.1f} min: {s['mask_iou']:.3f}, {s['depth_rmse']:.3f}): "
            + ("better on both in less time." if better and u["seconds"] <= s["seconds"] else
               "see the curves.")
        )  # fmt: skip
    header = ["model", "recipe", "minutes run", "minutes to target",
              "validations (minutes: val mask_iou / val depth_rmse)"]  # fmt: skip
    command = "python benchmarks/time_to_quality.py" + (
        "" if minutes == 15.0 else f" --minutes {minutes:g}"
    )
    return "\n".join([
        "## Time to quality",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command}` (the `{profile}` profile on the built-in data; targets: val "
        f"mask_iou >= {iou} and val depth_rmse <= {rmse}; each run stops there or after "
        f"{minutes:g} minutes; the clock includes data preparation and each epoch's validation;"
        f" {auto_precision()} (what `precision: auto` chose) and channels_last for both).",
        "",
        table(header, rows),
        "",
        verdict,
    ])  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--minutes", type=float, default=15.0, help="limit of each run")
    parser.add_argument("--iou", type=float, default=0.90, help="target val mask_iou")
    parser.add_argument("--rmse", type=float, default=0.06, help="target val depth_rmse")
    parser.add_argument("--out", default="outputs/bench-time-to-quality")
    parser.add_argument(
        "--render", action="store_true", help="only write the section again from OUT's results"
    )
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "cpu"
    minutes = 0.5 if args.smoke else args.minutes
    out = Path(args.out)
    if args.render:
        results = json.loads((out / "results.json").read_text())
    else:
        results = [run(exp, profile, minutes, args.iou, args.rmse, []) for _, exp in RUNS]
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
    body = render(results, minutes, args.iou, args.rmse, profile)
    publish("time_to_quality", body, write=not args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
