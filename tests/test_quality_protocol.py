"""The protocol's tables (benchmarks/quality.py): each metric beside its floors. (The verdict
itself: tests/test_metrics.py.)"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.quality import floors_of  # noqa: E402


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
