"""The protocol's verdict (benchmarks/quality.py): better or worse only beyond the seeds'
spread."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality import floors_of, verdict  # noqa: E402


@pytest.mark.parametrize(
    ("default", "variant", "direction", "said"),
    [
        ([0.90, 0.92], [0.95, 0.96], "higher", "better"),  # gain 0.045 > spread 0.02
        ([0.90, 0.92], [0.92, 0.93], "higher", "same"),  # gain 0.015 < spread 0.02
        ([0.90, 0.92], [0.85, 0.86], "higher", "worse"),
        ([0.08, 0.09], [0.05, 0.06], "lower", "better"),  # lower is better: a drop gains
        ([0.08, 0.09], [0.10, 0.12], "lower", "worse"),
        ([0.08, 0.08], [0.08, 0.08], "lower", "same"),  # no spread, no difference
    ],
)
def test_a_verdict_needs_a_difference_beyond_the_spread(default, variant, direction, said):
    spread, got = verdict(default, variant, direction)
    assert got == said
    assert spread == pytest.approx(max(max(default) - min(default), max(variant) - min(variant)))


def test_each_headline_metric_names_its_floors():
    refs = {
        "background_subtraction": {"mask_iou": 0.3},
        "mean_depth": {"depth_rmse": 0.15, "fg_distance_error": 0.13},
        "constant_distance": {"fg_distance_error": 0.12},
        "silhouette_geometry": {"fg_distance_error": 0.095},
    }
    floors = floors_of(refs)
    assert floors["mask_iou"] == "background_subtraction 0.3000"
    assert floors["depth_rmse"] == "mean_depth 0.1500"
    assert floors["fg_distance_error"] == "constant_distance 0.1200; silhouette_geometry 0.0950"
