"""Evaluation and prediction over a data source, with models whose outputs are known."""

import numpy as np
import pytest
import torch
from torch import nn

from fgdepth.engine.evaluate import (
    evaluate,
    input_size_of,
    predict,
    sample_predictions,
    to_device,
)
from fgdepth.metrics import METRIC_NAMES

CPU = torch.device("cpu")
SIZE = 16


class Arrays:
    """A data source in the loaders' compact form (what ``evaluate`` reads through
    ``batches`` and ``raw``): uint8 images, a uint8 mask, a uint16 depth. The foreground is
    a square where fg_bg differs from bg; depth is fg_bg's red channel (65535 = 255)."""

    def __init__(self, rows: int = 6, size: int = SIZE, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.size = size
        self.bg = rng.integers(0, 100, (rows, 3, size, size), dtype=np.uint8)
        self.fg_bg = self.bg.copy()
        self.mask = np.zeros((rows, 1, size, size), np.uint8)
        for i in range(rows):
            y, x = rng.integers(0, size // 2, 2)
            self.fg_bg[i, :, y : y + size // 2, x : x + size // 2] += 120 + np.uint8(i)
            self.mask[i, 0, y : y + size // 2, x : x + size // 2] = 1
        self.depth = self.fg_bg[:, :1].astype(np.uint16) * 257  # 255 * 257 = 65535
        self.depth[self.depth == 0] = 257  # depth 0 is "no depth": every pixel has one

    def raw(self, indices) -> dict[str, torch.Tensor]:
        rows = np.sort(np.asarray(indices))
        return {
            "index": torch.from_numpy(rows),
            **{k: torch.from_numpy(getattr(self, k)[rows]) for k in ("fg_bg", "bg", "mask")},
            "depth": torch.from_numpy(self.depth[rows].astype(np.int32)).to(torch.uint16),
        }

    def batches(self, index_lists):
        return (self.raw(rows) for rows in index_lists)

    def truth(self, indices) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(indices)
        return self.mask[rows].astype(bool), self.depth[rows] / 65535


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.log(p / (1 - p))


class Oracle(nn.Module):
    """Finds the foreground where fg_bg differs from bg; depth is fg_bg's red channel."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, fg_bg, bg):  # (B, 3, H, W) each
        changed = (fg_bg - bg).abs().amax(1, keepdim=True) > 0
        mask = torch.where(changed, 20.0, -20.0)
        depth = _logit(fg_bg[:, :1].clamp(min=1 / 255))
        return mask + self.p, depth


class Constant(nn.Module):
    """No foreground anywhere; depth ``depth`` everywhere."""

    def __init__(self, depth: float = 0.5):
        super().__init__()
        self.depth = float(np.log(depth / (1 - depth)))
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, fg_bg, bg):
        b, _, h, w = fg_bg.shape
        return torch.full((b, 1, h, w), -20.0) + self.p, torch.full((b, 1, h, w), self.depth)


def test_a_perfect_model_scores_perfectly_on_every_metric():
    data = Arrays()
    metrics = evaluate(Oracle(), data, np.arange(6), CPU)
    assert set(metrics) == set(METRIC_NAMES)
    for name in ("mask_iou", "mask_iou_image", "mask_dice", "depth_delta1", "depth_iou_seed"):
        assert metrics[name] == pytest.approx(1.0), name
    for name in ("depth_rmse", "depth_absrel", "depth_rmse_fg", "fg_distance_error"):
        assert metrics[name] == pytest.approx(0.0, abs=1e-4), name
    assert metrics["depth_ssim"] == pytest.approx(1.0, abs=1e-4)


def test_a_constant_model_scores_its_known_errors():
    data = Arrays()
    rows = np.array([1, 3, 4])
    metrics = evaluate(Constant(0.5), data, rows, CPU)
    mask, depth = data.truth(rows)
    assert metrics["mask_iou"] == 0.0 and metrics["mask_dice"] == 0.0
    assert metrics["depth_rmse"] == pytest.approx(np.sqrt(np.mean((depth - 0.5) ** 2)), rel=1e-5)
    fg = depth[mask]
    assert metrics["depth_rmse_fg"] == pytest.approx(np.sqrt(np.mean((fg - 0.5) ** 2)), rel=1e-5)
    assert metrics["depth_absrel"] == pytest.approx(np.mean(np.abs(depth - 0.5) / depth), rel=1e-4)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_the_batch_size_does_not_change_the_metrics(batch_size):
    data, rows = Arrays(), np.array([0, 2, 3, 5, 1])
    whole = evaluate(Constant(0.3), data, rows, CPU, batch_size=16)
    parts = evaluate(Constant(0.3), data, rows, CPU, batch_size=batch_size)
    # every sum (SSIM too) is taken in float64 over per-pixel values that do not depend on the
    # batching: only the order of the float64 additions differs, ~1e-16 relative per row
    assert parts == pytest.approx(whole, rel=1e-12)


def test_only_the_given_rows_are_scored():
    data = Arrays()
    some = evaluate(Constant(0.7), data, np.array([2, 4]), CPU)
    _, depth = data.truth([2, 4])
    assert some["depth_rmse"] == pytest.approx(np.sqrt(np.mean((depth - 0.7) ** 2)), rel=1e-5)
    assert some != pytest.approx(evaluate(Constant(0.7), data, np.arange(6), CPU))


@pytest.mark.parametrize("training", [True, False])
def test_the_models_mode_is_restored(training):
    model = Oracle().train(training)
    modes = []
    model.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    evaluate(model, Arrays(), np.arange(3), CPU, batch_size=2)
    assert modes == [False, False] and model.training is training


def test_predict_gives_probabilities_of_the_logits():
    fg_bg = torch.rand(2, 3, 8, 8)
    mask, depth = predict(Oracle(), fg_bg, fg_bg.clone())
    assert mask.shape == depth.shape == (2, 1, 8, 8)
    assert mask.dtype == depth.dtype == torch.float32
    assert torch.all(mask < 1e-6)  # nothing changed: no foreground
    assert torch.allclose(depth, fg_bg[:, :1].clamp(min=1 / 255), atol=1e-5)


def test_to_device_converts_the_compact_form_and_drops_other_keys():
    data = Arrays(rows=2)
    raw = data.raw([0, 1])
    batch = to_device(raw, CPU)
    assert set(batch) == {"fg_bg", "bg", "mask", "depth"}
    assert all(v.dtype == torch.float32 for v in batch.values())
    assert torch.equal(batch["fg_bg"], raw["fg_bg"].float() / 255)
    assert torch.equal(batch["mask"], raw["mask"].float())
    assert torch.allclose(batch["depth"], torch.from_numpy(data.depth[:2] / 65535).float())


def test_to_device_upsamples_smaller_inputs_and_keeps_the_targets():
    batch = to_device(Arrays(rows=2).raw([0, 1]), CPU, channels_last=True, input_size=2 * SIZE)
    assert batch["fg_bg"].shape == batch["bg"].shape == (2, 3, 2 * SIZE, 2 * SIZE)
    assert batch["mask"].shape == batch["depth"].shape == (2, 1, SIZE, SIZE)
    assert batch["fg_bg"].is_contiguous(memory_format=torch.channels_last)


def test_the_input_size_follows_the_models_input_scale():
    data = Arrays(rows=1)
    assert input_size_of(Oracle(), data) == SIZE
    scaled = Oracle()
    scaled.input_scale = 2
    assert input_size_of(scaled, data) == 2 * SIZE


def test_sample_predictions_hold_inputs_truths_and_predictions_as_arrays():
    data = Arrays()
    model = Oracle().train()
    samples = sample_predictions(model, data, np.array([1, 4]), CPU)
    assert len(samples) == 2 and model.training
    mask, depth = data.truth([1, 4])
    for i, s in enumerate(samples):
        assert s["fg_bg"].shape == s["bg"].shape == (SIZE, SIZE, 3)
        assert s["fg_bg"].dtype == np.uint8
        assert np.array_equal(s["fg_bg"], data.fg_bg[[1, 4][i]].transpose(1, 2, 0))
        assert s["mask"].shape == s["mask_pred"].shape == s["depth_pred"].shape == (SIZE, SIZE)
        assert np.array_equal(s["mask"] > 0.5, mask[i, 0])
        assert np.array_equal(s["mask_pred"] > 0.5, mask[i, 0])
        assert np.allclose(s["depth"], depth[i, 0], atol=1e-6)
    assert sample_predictions(model, data, np.array([], int), CPU) == []
