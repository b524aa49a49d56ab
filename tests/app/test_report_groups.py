"""``fgdepth report``'s groups of comparable runs and its ``differs`` column, on tables as
``mlflow.search_runs`` gives them (no store)."""

import math

import pandas as pd

from fgdepth.app.report import differing_params, group_of, groups, table


def search_row(name: str, digest="d1", rows="12", size="32", **params) -> dict:
    """A row of ``mlflow.search_runs``: tags, params (missing: NaN, as pandas fills them)."""
    row = {
        "run_id": name, "tags.mlflow.runName": name, "tags.fgdepth.model": "unet",
        "tags.fgdepth.dataset": "builtin", "tags.fgdepth.data_digest": digest,
        "tags.fgdepth.test_rows": rows, "tags.fgdepth.image_size": size,
        "metrics.test_mask_iou": 0.9,
    }  # fmt: skip
    row.update({f"params.{k}": v for k, v in params.items()})
    return row


def test_runs_are_grouped_by_their_test_data_and_size_newest_first():
    runs = pd.DataFrame([
        search_row("cpu", rows="1200", size="96"),
        search_row("smoke a"), search_row("smoke b"),
        search_row("other split", digest="d2"),
        search_row("cpu 2", rows="1200", size="96"),
    ])  # fmt: skip
    found = groups(runs)
    assert found == [
        "builtin (test data d1): 1200 test rows at 96 px",
        "builtin (test data d1): 12 test rows at 32 px",
        "builtin (test data d2): 12 test rows at 32 px",
    ]
    labels = runs.apply(group_of, axis=1)
    assert list(runs[labels == found[0]]["run_id"]) == ["cpu", "cpu 2"]


def test_a_run_logged_before_its_test_data_was_is_grouped_by_its_dataset_and_size():
    row = pd.Series({"tags.fgdepth.dataset_fingerprint": "a" * 64,
                     "params.run.stages.0": "64px x 100 x 1ep",
                     "params.run.stages.1": "96px x 50 x 1ep"})  # fmt: skip
    assert group_of(row) == f"(test data dataset {'a' * 12}): ? test rows at 96 px"


def test_differs_names_real_differences_only():
    runs = pd.DataFrame([
        # an `mlflow run` run: the entry point's given params (data, workers), max_minutes
        # given as 0 and resolved as none
        search_row("project", data="builtin", workers="1", max_minutes="0.0",
                   **{"max_minutes.resolved": "none", "optimizer.lr": "0.004"}),
        search_row("fgdepth", **{"optimizer.lr": "0.004"}),
        search_row("capped", max_minutes="5.0", **{"optimizer.lr": "0.01"}),
    ])  # fmt: skip
    assert differing_params(runs) == ["max_minutes", "optimizer.lr"]
    frame = table(runs).set_index("run")
    assert frame.loc["project", "differs"] == "max_minutes=none; optimizer.lr=0.004"
    assert frame.loc["fgdepth", "differs"] == "max_minutes=none; optimizer.lr=0.004"
    assert frame.loc["capped", "differs"] == "max_minutes=5.0; optimizer.lr=0.01"
    assert not any("nan" in text for text in frame["differs"])
    assert frame.loc["project", "mask_iou"] == 0.9  # read from test_mask_iou
    assert math.isnan(frame.loc["project", "depth_rmse"])  # not logged: no value


def test_entry_point_params_differ_only_between_runs_that_have_them():
    runs = pd.DataFrame([
        search_row("a", data="builtin"), search_row("b", data="/data/rooms"), search_row("c"),
    ])  # fmt: skip
    assert differing_params(runs) == ["data"]
    assert list(table(runs)["differs"]) == ["data=builtin", "data=/data/rooms", ""]
