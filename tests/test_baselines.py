"""Reference predictions: background subtraction, the dataset-mean depth map and the two
references for the foreground's distance."""

import numpy as np
import pytest
import torch

from fgdepth.baselines import (
    background_subtraction,
    distance_references,
    mean_depth,
    otsu_threshold,
    reference_metrics,
    silhouette_features,
)
from fgdepth.metrics import MetricAccumulator


def test_otsu_splits_two_clusters():
    values = torch.cat([torch.full((1, 500), 0.1), torch.full((1, 300), 0.7)], 1)
    threshold = otsu_threshold(values)
    assert 0.1 <= threshold.item() < 0.7


def test_background_subtraction_finds_a_square_and_drops_specks():
    bg = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5
    fg = bg.clone()
    fg[:, :, 8:20, 10:24] = 1.0  # the object
    fg[:, :, 28, 2] = 1.0  # a one-pixel speck: the opening removes it
    mask = background_subtraction(fg, bg)
    truth = torch.zeros(1, 1, 32, 32)
    truth[:, :, 8:20, 10:24] = 1
    assert torch.equal(mask, truth)


class _Cache:
    def __init__(self, depth):
        self.depth = depth

    def batch(self, rows):
        return {"depth": self.depth[rows]}


def test_mean_depth_is_the_per_pixel_mean_over_the_rows():
    depth = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    rows = np.array([1, 3, 5, 7])
    got = mean_depth(_Cache(depth), rows, batch_size=3)
    assert torch.allclose(got, depth[rows].mean(0, keepdim=True), atol=1e-6)


class _TruthCache:
    """The true mask and depth of each row, as ``ArrayCache.batch`` gives them (and the
    images, for ``reference_metrics``)."""

    def __init__(self, mask, depth):
        self.mask, self.depth = mask, depth

    def batch(self, rows):
        image = self.mask[rows].expand(-1, 3, -1, -1)
        return {"fg_bg": image, "bg": torch.zeros_like(image),
                "mask": self.mask[rows], "depth": self.depth[rows]}  # fmt: skip


SIZE = 16
# (top row, lowest row) of each rectangle: the train rows, then the test rows
BOXES = [(2, 9), (5, 14), (0, 15), (8, 11), (3, 6), (10, 15), (1, 12), (6, 8), (4, 13), (7, 15)]


def linear_distance(top: int, lowest: int) -> float:
    """A distance that is exactly the model's linear form in bottom and height."""
    bottom, height = (lowest + 1) / SIZE, (lowest - top + 1) / SIZE
    return 0.9 - 0.5 * bottom - 0.2 * height + 0.1 * bottom * height + 0.15 * bottom**2


def boxes_cache(boxes, distance, empty_depth: float = 0.99) -> _TruthCache:
    """A rectangle per row at depth ``distance(top, lowest)`` on a background of 1.0; then one
    row with an empty mask and depth ``empty_depth`` everywhere."""
    mask = torch.zeros(len(boxes) + 1, 1, SIZE, SIZE)
    depth = torch.ones(len(boxes) + 1, 1, SIZE, SIZE)
    for i, (top, lowest) in enumerate(boxes):
        mask[i, :, top : lowest + 1, 3 + i % 5 : 9 + i % 5] = 1
        depth[i][mask[i] > 0] = distance(top, lowest)
    depth[-1] = empty_depth
    return _TruthCache(mask, depth)


def test_silhouette_features_are_the_lower_edge_and_height():
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[0, :, 4:12, 2:5] = 1  # rows 4..11
    mask[1, :, 15, 0] = 1  # one pixel in the last row
    got = silhouette_features(mask)
    bottom, height = torch.tensor([12 / 16, 1.0]), torch.tensor([8 / 16, 1 / 16])
    want = torch.stack([torch.ones(2), bottom, height, bottom * height, bottom**2], 1)
    assert got.dtype == torch.float64 and torch.allclose(got, want.double())


def test_silhouette_geometry_fits_a_distance_linear_in_its_features_exactly():
    cache = boxes_cache(BOXES, linear_distance)
    train, test = np.arange(6), np.array([6, 7, 8, 9, len(BOXES)])  # the last has no object
    refs = distance_references(cache, train, test, batch_size=4)
    # lstsq in float64 on 6 exact rows of full rank: the only error left is the distances'
    # rounding to float32 in the depth maps (~3e-8)
    assert refs["silhouette_geometry"]["fg_distance_error"] < 1e-6
    assert set(refs["silhouette_geometry"]) == {"fg_distance_error"}


def test_constant_distance_is_the_train_median_for_every_object():
    values = [0.2, 0.5, 0.3, 0.8, 0.4, 0.6, 0.1, 0.7, 0.35]
    cache = boxes_cache(BOXES[:9], lambda top, lowest: values[BOXES.index((top, lowest))])
    train, test = np.array([0, 1, 2, 3, 9]), np.array([4, 5, 6, 7, 8, 9])  # 9: empty, skipped
    values = np.float32(values).astype(np.float64)  # as the depth maps store them
    median = np.median(values[:4])  # (0.3 + 0.5) / 2: the empty row's 0.99 is not counted
    want = np.abs(values[4:9] - median).mean()
    refs = distance_references(cache, train, test, batch_size=2)
    assert refs["constant_distance"]["fg_distance_error"] == pytest.approx(want, abs=1e-12)
    # the same number as the metric gives for a depth map of that constant
    acc = MetricAccumulator()
    batch = cache.batch(test)
    acc.update(batch["mask"], torch.full_like(batch["depth"], median, dtype=torch.float64),
               batch["mask"], batch["depth"])  # fmt: skip
    assert acc.compute()["fg_distance_error"] == pytest.approx(want, abs=1e-12)


def test_references_include_the_two_distance_rows():
    cache = boxes_cache(BOXES, linear_distance)
    refs = reference_metrics(cache, np.arange(6), np.arange(6, len(BOXES) + 1))
    assert set(refs) == {"background_subtraction", "mean_depth", "constant_distance",
                         "silhouette_geometry"}  # fmt: skip
    for key in ("constant_distance", "silhouette_geometry"):
        assert list(refs[key]) == ["fg_distance_error"]
        assert np.isfinite(refs[key]["fg_distance_error"])
    assert refs["constant_distance"]["fg_distance_error"] > 0.01  # the objects' distances vary


def test_without_a_foreground_the_distance_references_are_nan():
    cache = boxes_cache(BOXES[:2], linear_distance)
    refs = distance_references(cache, np.array([2]), np.array([0, 1]))
    assert all(np.isnan(r["fg_distance_error"]) for r in refs.values())
