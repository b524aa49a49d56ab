"""``app.study``: the plan under a time budget, the table over seeds, the clock."""

import math

import pytest

from fgdepth.app import study
from fgdepth.app.study import StudyClock, markdown_table, plan_study


def row(name, seed, iou, rmse):
    metrics = dict.fromkeys(study.TABLE_METRICS, 0.5) | {"mask_iou": iou, "depth_rmse": rmse}
    return {"experiment": name, "seed": seed, "metrics": metrics, "minutes": 2.0,
            "train_minutes": 1.5, "samples": 1000 + seed, "images": []}  # fmt: skip


def test_the_table_gives_mean_and_std_over_seeds_and_marks_the_best_mean():
    rows = [row("default", 0, 0.90, 0.05), row("default", 1, 0.92, 0.07), row("bce", 0, 0.95, 0.2)]
    lines = markdown_table(rows).splitlines()
    assert lines[0].startswith("| entry point | mask_iou |")
    default = [c.strip() for c in lines[2].split("|")[1:-1]]
    bce = [c.strip() for c in lines[3].split("|")[1:-1]]
    assert default[0] == "default" and bce[0] == "bce"
    # 0.91 ± std(0.90, 0.92) with n - 1; the best depth_rmse mean is default's (0.06 < 0.2)
    assert default[1] == f"0.9100 ± {math.sqrt(2 * 0.01**2):.4f}"
    assert default[3] == f"**0.0600 ± {math.sqrt(2 * 0.01**2):.4f}**"
    assert bce[1] == "**0.9500**"  # one seed: the value alone, and the best mask_iou
    assert default[-4:] == ["0,1", "1.50", "1,000", "2.0"]  # seeds, train min, samples, minutes


def test_the_table_has_a_distance_column_where_lower_is_best():
    rows = [row("default", 0, 0.9, 0.1), row("bce", 0, 0.9, 0.1)]
    rows[0]["metrics"]["fg_distance_error"], rows[1]["metrics"]["fg_distance_error"] = 0.03, 0.02
    header, _, default, bce = markdown_table(rows).splitlines()
    column = [c.strip() for c in header.split("|")[1:-1]].index("fg_distance_error")
    assert default.split("|")[1:-1][column].strip() == "0.0300"
    assert bce.split("|")[1:-1][column].strip() == "**0.0200**"


def test_the_clock_corrects_the_runs_left_by_how_the_finished_ones_went(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(study.time, "monotonic", lambda: now[0])
    clock = StudyClock([60.0, 60.0, 60.0], before_s=30.0)
    assert clock.total_minutes() == pytest.approx(3.5)
    now[0] += 180.0  # the first run (and the data) took twice the estimate: 180 s for 90
    line = clock.finished()
    assert line.startswith("study: 1/3 runs in 3.0 min; about 4.0 min left")


class FakeRates:  # deterministic rates: the original network 26 times slower per sample
    def __init__(self, steps=1):
        pass

    def __call__(self, config, stage):
        return 100.0 * (48 / stage.size) ** 2 / (26 if config.model.name == "seed" else 1)


def test_every_run_of_a_budgeted_study_is_fitted_to_the_same_minutes(monkeypatch):
    monkeypatch.setattr(study, "Rates", FakeRates)
    runs = plan_study(["bce", "seed_staged"], [0, 1], "cpu", None, minutes=1.5)
    assert [(r.name, r.seed) for r in runs] == [
        ("bce", 0), ("bce", 1), ("seed_staged", 0), ("seed_staged", 1),
    ]  # fmt: skip
    for r in runs:
        assert r.config.seed == r.seed
        assert r.config.train_minutes == 1.5  # the run fits its samples to it (engine.budget)
        assert r.config.eval.stage_tests is False and r.config.data.val_samples == 100
        assert r.config.max_minutes == pytest.approx(1.5 * 1.5 + 1)  # a safety stop only
        assert r.expected_s > 90.0 + study.RUN_OVERHEAD_S  # and evaluation
    # evaluating the original network costs more: a longer run for the same training time
    assert runs[2].expected_s > runs[0].expected_s


def test_rates_are_timed_once_per_model_size_batch_and_frozen_groups(monkeypatch):
    import fgdepth.engine.timing as timing
    from fgdepth.config import load_config, scaled_stages

    calls = []
    monkeypatch.setattr(timing, "training_rate", lambda c, s, *a, **k: calls.append(s) or 50.0)
    rates = study.Rates()
    for name in ("bce", "dice", "staged_transfer"):  # one model; staged freezes groups
        config = load_config(name, "cpu")
        for stage in scaled_stages(config):
            assert rates(config, stage) == 50.0
    keys = {(s.size, tuple(s.freeze)) for s in calls}
    assert len(calls) == len(keys) == 5  # 48, 64, 96 px; 96 px with the mask or trunk frozen


def test_without_a_budget_the_recipes_run_as_written():
    (run,) = plan_study(["bce"], [3], "smoke", None, overrides=["max_minutes=2"])
    assert run.config.scale.samples == pytest.approx(0.0002)
    assert run.config.eval.stage_tests is True and run.config.max_minutes == 2
