import math

import pytest
import torch

from fgdepth.metrics import METRIC_NAMES, MetricAccumulator, masked_median, ssim_window, verdict


def test_ssim_window_fits_the_image():
    assert ssim_window(64) == 11 and ssim_window(8) == 7 and ssim_window(10) == 9
    with pytest.raises(ValueError):
        ssim_window(2)


def _batch():
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, :4, :4] = 1  # 16 pixels
    mask[1, 0, 2:6, 2:6] = 1
    depth = torch.full((2, 1, 8, 8), 0.25)
    depth[mask > 0] = 0.75
    return mask, depth


def test_perfect_prediction():
    mask, depth = _batch()
    acc = MetricAccumulator()
    acc.update(mask, depth, mask, depth)
    m = acc.compute()
    assert set(m) == set(METRIC_NAMES)
    assert m["mask_iou"] == m["mask_iou_image"] == m["mask_dice"] == 1.0
    assert m["depth_rmse"] == m["depth_absrel"] == m["depth_rmse_fg"] == 0.0
    assert m["fg_distance_error"] == 0.0
    assert m["depth_delta1"] == 1.0 and m["depth_iou_seed"] == 1.0
    assert m["depth_ssim"] == pytest.approx(1.0)


def test_known_values():
    mask, depth = _batch()
    pred_mask = torch.zeros_like(mask)
    pred_mask[0, 0, :4, :2] = 1  # half of image 0's foreground, nothing in image 1
    pred_depth = depth + 0.1  # everywhere off by 0.1
    acc = MetricAccumulator()
    acc.update(pred_mask, pred_depth, mask, depth)
    m = acc.compute()
    assert m["mask_iou"] == pytest.approx(8 / 32)
    assert m["mask_iou_image"] == pytest.approx((0.5 + 0.0) / 2)
    assert m["mask_dice"] == pytest.approx(2 * 8 / (8 + 32))
    assert m["depth_rmse"] == pytest.approx(0.1, abs=1e-6)
    assert m["depth_rmse_fg"] == pytest.approx(0.1, abs=1e-6)
    assert m["fg_distance_error"] == pytest.approx(0.1, abs=1e-6)
    n_bg, n_fg = 128 - 32, 32
    assert m["depth_absrel"] == pytest.approx((n_bg * 0.1 / 0.25 + n_fg * 0.1 / 0.75) / 128)
    assert m["depth_delta1"] == pytest.approx(n_fg / 128)  # 0.35/0.25 = 1.4 fails, 0.85/0.75 ok


def test_batching_does_not_change_the_result():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 1, 16, 16, generator=g) > 0.7).float()
    depth = torch.rand(6, 1, 16, 16, generator=g)
    pm, pd = torch.rand(6, 1, 16, 16, generator=g), torch.rand(6, 1, 16, 16, generator=g)
    whole, parts = MetricAccumulator(), MetricAccumulator()
    whole.update(pm, pd, mask, depth)
    parts.update(pm[:2], pd[:2], mask[:2], depth[:2])
    parts.update(pm[2:], pd[2:], mask[2:], depth[2:])
    a, b = whole.compute(), parts.compute()
    for key in METRIC_NAMES:
        # float64 sums and float64 SSIM: the batching changes only the order of additions
        assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-15), key


def test_masked_median_matches_torch_median_and_empty_is_nan():
    values = torch.tensor([[5.0, 1.0, 3.0, 9.0], [2.0, 2.0, 2.0, 2.0]])
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0]]).bool()
    med = masked_median(values, mask)
    assert med[0] == torch.tensor([5.0, 1.0, 3.0]).median()
    assert torch.isnan(med[1])


def test_depth_iou_seed_rewards_a_constant_map():
    """The study's depth 'IoU' is weak: a constant map can score well. Here it scores 0.5."""
    depth = torch.cat([torch.full((1, 1, 4, 8), 0.9), torch.full((1, 1, 4, 8), 0.4)], 2)
    acc = MetricAccumulator()
    acc.update(torch.zeros_like(depth), torch.full_like(depth, 0.6), torch.zeros_like(depth), depth)
    assert acc.compute()["depth_iou_seed"] == pytest.approx(0.5)


def test_spread_is_the_mean_and_sample_deviation_over_runs():
    from fgdepth.metrics import format_spread, spread, spread_text

    mean, std = spread([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    assert std == pytest.approx(0.02)  # n - 1: sqrt((0.02² + 0 + 0.02²) / 2)
    assert math.isnan(spread([0.5])[1])
    assert format_spread([0.90, 0.92, 0.94]) == "0.9200 ± 0.0200"
    assert format_spread([0.5], digits=2) == "0.50"
    assert spread_text(0.92, 0.02) == "0.9200 ± 0.0200" and spread_text(math.nan, math.nan) == "—"
    with pytest.raises(ValueError):
        spread([])


def test_the_distance_error_in_metres_is_taken_per_image():
    """Two images off by 0.1 in 0..1 each, one near and one far: in a log encoding the same
    0..1 error is a few metres near and many far, so each image's medians are converted first
    (converting the mean 0..1 error would give neither)."""
    from fgdepth.data.units import DepthEncoding

    enc = DepthEncoding("log", 1.0, 40.0)
    mask = torch.ones(2, 1, 8, 8)
    depth = torch.tensor([0.5, 0.1]).view(2, 1, 1, 1).expand(2, 1, 8, 8)
    pred = depth + 0.1
    acc = MetricAccumulator(enc.to_metres)
    acc.update(mask, pred, mask, depth)
    m = acc.compute()
    near = 40 * (1 / 40) ** 0.5 - 40 * (1 / 40) ** 0.6  # 6.32 - 4.40 m
    far = 40 * (1 / 40) ** 0.1 - 40 * (1 / 40) ** 0.2  # 27.66 - 19.13 m
    assert m["fg_distance_error"] == pytest.approx(0.1, abs=1e-6)
    assert m["fg_distance_error_m"] == pytest.approx((near + far) / 2, rel=1e-5)
    parts = MetricAccumulator(enc.to_metres)  # sums: any batching, any number of ranks
    parts.update(mask[:1], pred[:1], mask[:1], depth[:1])
    parts.update(mask[1:], pred[1:], mask[1:], depth[1:])
    assert MetricAccumulator.of(parts.sums).compute()["fg_distance_error_m"] == pytest.approx(
        m["fg_distance_error_m"], rel=1e-12
    )
    plain = MetricAccumulator()  # no encoding: no metres
    plain.update(mask, pred, mask, depth)
    assert "fg_distance_error_m" not in plain.compute()


@pytest.mark.parametrize(
    ("default", "variant", "lower", "said"),
    [
        ([0.90, 0.92], [0.95, 0.96], False, "better"),  # gain 0.045 > spread 0.02
        ([0.90, 0.92], [0.92, 0.93], False, "same"),  # gain 0.015 < spread 0.02
        ([0.90, 0.92], [0.85, 0.86], False, "worse"),
        ([0.08, 0.09], [0.05, 0.06], True, "better"),  # lower is better: a drop gains
        ([0.08, 0.09], [0.10, 0.12], True, "worse"),
        ([0.08, 0.08], [0.08, 0.08], True, "same"),  # no spread, no difference
    ],
)
def test_a_verdict_needs_a_difference_beyond_the_spread(default, variant, lower, said):
    spread, got = verdict(default, variant, lower)
    assert got == said
    assert spread == pytest.approx(max(max(default) - min(default), max(variant) - min(variant)))
