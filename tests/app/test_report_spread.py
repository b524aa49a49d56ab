"""``fgdepth report``'s mean ± std over the runs that differ only by the seed; the reference
lines of its charts."""

import math

import numpy as np
import pandas as pd
import pytest

from fgdepth.app.report import (
    METRICS,
    bar_charts,
    group_html,
    html_page,
    reference_lines,
    spread_console,
    spread_table,
)


def run_row(experiment: str, seed: int, mask_iou: float, depth_rmse: float, differs="") -> dict:
    """A row as ``report.table`` writes it (with the ``kind`` of ``make_report``)."""
    row = {
        "kind": "run", "run": experiment, "run_id": f"{experiment}-{seed}-{mask_iou}",
        "experiment": experiment, "entry_point": experiment, "losses": "mask=bce,depth=ssim",
        "model": "unet", "profile": "smoke", "differs": differs or f"seed={seed}",
        "seed": str(seed),
    }  # fmt: skip
    row.update({m: math.nan for m in METRICS})
    row.update(mask_iou=mask_iou, depth_rmse=depth_rmse, minutes=0.5, samples_per_s=100.0)
    return row


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = [
        run_row("bce_ssim", 2, 0.90, 0.12),
        run_row("bce_ssim", 0, 0.92, 0.10),
        run_row("bce_ssim", 1, 0.95, 0.11),
        run_row("ssim", 0, 0.80, 0.20),  # a single run: no spread
        run_row("dice", 0, 0.70, 0.30, "seed=0; optimizer.lr=0.01"),  # another lr: not pooled
        run_row("dice", 1, 0.75, 0.35, "seed=1; optimizer.lr=0.001"),
        {"run": "reference: dataset-mean depth map (depth)", "kind": "reference",
         **{m: 0.5 for m in METRICS}},
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_seeds_of_an_experiment_and_profile_give_mean_and_sample_std(frame):
    spread = spread_table(frame)
    assert list(spread["experiment"]) == ["bce_ssim"]  # ssim alone, dice's two lrs apart
    assert spread_table(frame[frame["experiment"] == "ssim"]).empty
    row = spread.iloc[0]
    assert (row["profile"], row["runs"], row["seeds"]) == ("smoke", 3, "0,1,2")
    for metric, values in (("mask_iou", [0.90, 0.92, 0.95]), ("depth_rmse", [0.12, 0.10, 0.11])):
        assert row[f"{metric}_mean"] == pytest.approx(np.mean(values))
        assert row[f"{metric}_std"] == pytest.approx(np.std(values, ddof=1))
    assert math.isnan(row["depth_delta1_mean"]) and math.isnan(row["depth_delta1_std"])
    assert list(spread.columns[:4]) == ["experiment", "profile", "runs", "seeds"]
    assert {"mask_iou_mean", "mask_iou_std", "fg_distance_error_std"} <= set(spread.columns)


def test_runs_that_differ_by_more_than_the_seed_are_not_pooled(frame):
    dice = frame[frame["experiment"] == "dice"]
    assert spread_table(dice).empty
    same_lr = dice.assign(differs=["seed=0; optimizer.lr=0.01", "seed=1; optimizer.lr=0.01"])
    pooled = spread_table(same_lr)
    assert list(pooled["runs"]) == [2] and pooled.iloc[0]["differs"] == "optimizer.lr=0.01"
    other_profile = dice.assign(differs=["seed=0", "seed=1"], profile=["smoke", "cpu"])
    assert spread_table(other_profile).empty


def test_the_page_and_the_console_show_mean_plus_minus_std(frame):
    spread = spread_table(frame)
    page = html_page([group_html(frame, {}, spread)], "fgdepth report: test")
    iou = f"{np.mean([0.90, 0.92, 0.95]):.4f} ± {np.std([0.90, 0.92, 0.95], ddof=1):.4f}"
    rmse = f"{np.mean([0.12, 0.10, 0.11]):.4f} ± {np.std([0.12, 0.10, 0.11], ddof=1):.4f}"
    assert "<h2>Mean ± std over seeds</h2>" in page
    assert f"<b>{iou}</b>" in page and f"<b>{rmse}</b>" in page  # the one group: the best
    console = spread_console(spread)
    assert iou in console and rmse in console and "bce_ssim" in console
    assert "Mean ± std" not in html_page(
        [group_html(frame, {}, spread_table(frame[3:]))], "fgdepth report: test"
    )


def test_the_best_mean_is_bold_by_the_metric_direction():
    rows = [run_row("a", s, 0.9 + s / 100, 0.1 + s / 100) for s in (0, 1)]
    rows += [run_row("b", s, 0.8 + s / 100, 0.05 + s / 100) for s in (0, 1)]
    frame = pd.DataFrame(rows)
    page = html_page([group_html(frame, {}, spread_table(frame))], "t")
    assert "<b>0.9050 ± 0.0071</b>" in page and "<td>0.8050 ± 0.0071</td>" in page  # higher
    assert "<b>0.0550 ± 0.0071</b>" in page and "<td>0.1050 ± 0.0071</td>" in page  # lower


def test_each_reference_with_a_value_gets_its_own_labelled_line(frame):
    nan = {m: math.nan for m in METRICS}
    distance = [
        {"run": "reference: train-median distance for every object (distance)",
         "kind": "reference", **nan, "fg_distance_error": 0.08},
        {"run": "reference: least squares on the true mask's lowest row and height (distance)",
         "kind": "reference", **nan, "fg_distance_error": 0.03},
    ]  # fmt: skip
    frame = pd.concat([frame, pd.DataFrame(distance)], ignore_index=True)
    refs = frame[frame["kind"] == "reference"]
    assert reference_lines(refs, "fg_distance_error") == [
        ("dataset-mean depth map (depth)", 0.5),
        ("train-median distance for every object (distance)", 0.08),
        ("least squares on the true mask's lowest row and height (distance)", 0.03),
    ]
    assert reference_lines(refs, "mask_iou") == [("dataset-mean depth map (depth)", 0.5)]
    assert reference_lines(refs[refs["run"].str.endswith("(distance)")], "mask_iou") == []
    assert bar_charts(frame).startswith(b"\x89PNG")  # the chart draws them all
    page = html_page([group_html(frame, {}, None)], "t")
    assert "<td>0.0800</td>" in page and "<td>0.0300</td>" in page
