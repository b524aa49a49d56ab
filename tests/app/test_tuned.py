"""``app.tuned``: the best configuration beside the default, a verdict per metric that only a
difference beyond the seeds' spread turns into better or worse."""

import csv

import pytest

from fgdepth.app import tuned
from fgdepth.config import load_config


def metrics(iou, rmse, dist):
    return {"mask_iou": iou, "depth_rmse": rmse, "fg_distance_error": dist}


def test_each_metric_and_the_score_get_a_mean_a_spread_and_a_verdict(tmp_path):
    config = load_config("default", "smoke")
    runs = {
        "default": [metrics(0.80, 0.10, 0.08), metrics(0.82, 0.11, 0.09)],
        "tuned": [metrics(0.90, 0.105, 0.12), metrics(0.91, 0.10, 0.13)],
    }
    rows = {r["metric"].split(" (")[0]: r for r in tuned.table(runs, config)}
    assert list(rows) == ["mask_iou", "depth_rmse", "fg_distance_error", "score"]
    # IoU up by 0.095 against a spread of 0.02; RMSE within its spread; distance up (worse);
    # the score 0.62 / 0.62 against 0.675 / 0.68: better, as the study would have said
    assert [rows[m]["verdict"] for m in rows] == ["better", "same", "worse", "better"]
    assert rows["mask_iou"]["tuned_mean"] == pytest.approx(0.905)
    assert rows["mask_iou"]["spread"] == pytest.approx(0.02)
    assert rows["depth_rmse"]["default_seeds"] == "0.1000 / 0.1100"
    # the score as the study scores a trial: 0.8 - 0.1 - 0.08 and 0.82 - 0.11 - 0.09
    assert rows["score"]["default_mean"] == pytest.approx((0.62 + 0.62) / 2)
    assert rows["score"]["metric"] == (
        "score (1 * mask_iou - 1 * depth_rmse - 1 * fg_distance_error)"
    )
    path = tuned.write_csv(tuned.table(runs, config), tmp_path / tuned.CSV_NAME)
    read = list(csv.DictReader(path.open()))
    assert [r["verdict"] for r in read] == ["better", "same", "worse", "better"]
    assert tuned.picture(tuned.table(runs, config), tmp_path / "p.png", "t").stat().st_size > 0


def test_the_tuned_recipe_is_the_studys_config_with_the_best_trials_values():
    config = load_config("default", "smoke", ["train_minutes=0.2"])
    label = "96px/120000x3"
    both = tuned.recipes(config, {"schedule": label, "lr_stage0": 0.001})
    assert both["default"] is config
    assert [s.size for s in both["tuned"].stages] == [96]
    assert both["tuned"].stages[0].optimizer["lr"] == 0.001
    assert both["tuned"].train_minutes == 0.2  # the same training minutes as the default
