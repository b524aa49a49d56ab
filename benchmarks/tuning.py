"""Pruning benchmark: the same trial budget with the median pruner and without pruning.

Both studies run `fgdepth tune` on the same experiment, profile, seed and sampler, so their
first trials draw the same values; each gets its own Optuna and MLflow store in OUT.

python benchmarks/tuning.py            # 12 trials each; writes BENCHMARKS.md's 'tuning' section
python benchmarks/tuning.py --smoke    # seconds; prints only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, publish, table  # noqa: E402

# a study at the `cpu` profile with a quarter of its samples and smaller validation/test sets:
# about a minute a trial on 2 cores
REDUCED_CPU = [
    "--profile", "cpu", "--set", "scale.samples=0.01", "--set", "data.val_samples=200",
    "--set", "eval.max_samples=400",
]  # fmt: skip
SMOKE = ["--profile", "smoke"]


def run_study(out: Path, pruner: str, trials: int, experiment: str, profile: list[str]) -> dict:
    folder = out / pruner
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    storage = f"sqlite:///{folder}/optuna.db"
    cmd = [
        sys.executable, "-m", "fgdepth", "tune", "--experiment", experiment, *profile,
        "--trials", str(trials), "--pruner", pruner, "--storage", storage,
        "--study", f"bench-{pruner}", "--out", str(folder / "study"), "--no-system-metrics",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=folder, capture_output=True, text=True)
    minutes = (time.perf_counter() - start) / 60
    (folder / "log.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name=f"bench-{pruner}", storage=storage)
    trials = study.get_trials()
    best = study.best_trial
    return {
        "pruner": pruner,
        "minutes": minutes,
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "best_value": best.value,
        "best_trial": best.number,
        "best_val": {k[4:]: v for k, v in best.user_attrs.items() if k.startswith("val_")},
        "best_params": best.params,
        "best_yaml": yaml.safe_load((folder / "study" / "best.yaml").read_text()),
        "epochs": sum(len(t.intermediate_values) for t in trials),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--out", default="outputs/bench-tuning")
    args = parser.parse_args(argv)
    trials = 3 if args.smoke else args.trials
    profile = SMOKE if args.smoke else REDUCED_CPU
    out = Path(args.out).resolve()
    results = [run_study(out, p, trials, args.experiment, profile) for p in ("median", "none")]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    rows = [
        [
            r["pruner"],
            r["complete"] + r["pruned"],
            r["pruned"],
            r["epochs"],
            f"{r['minutes']:.1f}",
            f"{r['best_value']:.4f}",
            f"{r['best_val'].get('mask_iou', float('nan')):.4f}",
            f"{r['best_val'].get('depth_rmse', float('nan')):.4f}",
        ]
        for r in results
    ]
    header = ["pruner", "trials", "pruned", "epochs trained", "minutes", "best score"]
    header += ["its val mask_iou", "its val depth_rmse"]
    command = f"python benchmarks/tuning.py --trials {trials} --experiment {args.experiment}"
    body = "\n".join(
        [
            "## Tuning: pruning against no pruning",
            "",
            f"Machine: {machine()}.",
            f"Command: `{command}` (each study: `fgdepth tune {' '.join(profile)}`, "
            f"{trials} trials, seed 0, TPE sampler; score = val mask_iou - val depth_rmse).",
            "",
            table(header, rows),
        ]
    )
    publish("tuning", body, write=not args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
