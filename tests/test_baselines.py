"""Reference predictions: background subtraction and the dataset-mean depth map."""

import numpy as np
import torch

from fgdepth.baselines import background_subtraction, mean_depth, otsu_threshold


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
