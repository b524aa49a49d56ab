"""Time to quality: wall-clock until the validation split reaches a mask IoU and a depth RMSE,
for the original network with the original recipe against the default model with the default
recipe, both at the `cpu` profile on the built-in data, each given the same time limit.

Each run trains in this process (the engine alone: no tracking) and stops at the first epoch
whose validation metrics meet both targets, or at the limit. The clock counts everything a run
does from its start: data preparation, training and each epoch's validation.

python benchmarks/time_to_quality.py               # 15 minutes at most each; writes BENCHMARKS.md
python benchmarks/time_to_quality.py --smoke       # seconds; prints only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, table, write_section  # noqa: E402
from fgdepth.config import load_config  # noqa: E402
from fgdepth.engine import Callback, fit  # noqa: E402
from fgdepth.engine.fit import Interrupted  # noqa: E402
from fgdepth.runner import resolve_dataset  # noqa: E402

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


def at(curve: list[dict], seconds: float) -> dict | None:
    """The last validation at or before ``seconds``."""
    done = [p for p in curve if p["seconds"] <= seconds]
    return done[-1] if done else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--minutes", type=float, default=15.0, help="limit of each run")
    parser.add_argument("--iou", type=float, default=0.90, help="target val mask_iou")
    parser.add_argument("--rmse", type=float, default=0.06, help="target val depth_rmse")
    parser.add_argument("--out", default="outputs/bench-time-to-quality")
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "cpu"
    minutes = 0.5 if args.smoke else args.minutes
    results = [run(exp, profile, minutes, args.iou, args.rmse, []) for _, exp in RUNS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))

    # equal wall-clock: each run's last validation within the shorter run's time
    common = min(r["seconds"] for r in results)
    rows = []
    for r in results:
        last = (
            r["curve"][-1] if r["curve"] else {"mask_iou": float("nan"), "depth_rmse": float("nan")}
        )
        same = at(r["curve"], common) or {"mask_iou": float("nan"), "depth_rmse": float("nan")}
        rows.append([
            r["model"], r["experiment"], len(r["curve"]),
            f"{r['reached'] / 60:.1f}" if r["reached"] else f"not within {minutes:g}",
            f"{last['mask_iou']:.4f}", f"{last['depth_rmse']:.4f}",
            f"{same['mask_iou']:.4f}", f"{same['depth_rmse']:.4f}",
        ])  # fmt: skip
    seed, unet = results
    if unet["reached"] and seed["reached"]:
        ratio = seed["reached"] / unet["reached"]
        verdict = f"The default model reached the targets {ratio:.1f}x sooner."
    elif unet["reached"]:
        verdict = (
            f"The seed network did not reach the targets within {minutes:g} minutes: the default "
            f"model was at least {minutes * 60 / unet['reached']:.1f}x sooner."
        )
    else:
        verdict = f"The default model did not reach the targets within {minutes:g} minutes."
    header = ["model", "recipe", "epochs", "minutes to target", "last val mask_iou",
              "last val depth_rmse", f"val mask_iou at {common / 60:.1f} min",
              f"val depth_rmse at {common / 60:.1f} min"]  # fmt: skip
    command = "python benchmarks/time_to_quality.py" + (
        "" if minutes == 15.0 else f" --minutes {minutes:g}"
    )
    body = "\n".join([
        "## Time to quality",
        "",
        f"Machine: {machine()}.",
        f"Command: `{command}` (the `{profile}` profile on the built-in data; targets: val "
        f"mask_iou >= {args.iou} and val depth_rmse <= {args.rmse}; each run stops there or "
        f"after {minutes:g} minutes; the clock includes data preparation and validation).",
        "",
        table(header, rows),
        "",
        verdict,
    ])  # fmt: skip
    print(body)
    if not args.smoke:
        write_section("time_to_quality", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
