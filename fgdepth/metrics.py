"""Mask and depth metrics, accumulated over batches on the training device.

Names as logged: ``mask_iou`` (pooled over pixels), ``mask_iou_image`` (mean per image),
``mask_dice``, ``depth_rmse``, ``depth_absrel``, ``depth_delta1`` (on pixels with true depth
> 0), ``depth_ssim``, ``depth_rmse_fg`` (inside the true mask), ``fg_distance_error``
(|median predicted - median true depth inside the true mask|, per image, averaged) and
``depth_iou_seed`` (IoU of depth > 0.5, the original study's measure, weak: for comparison).
Given the data's depth encoding (``to_metres``), also ``fg_distance_error_m``: the same error in
metres, each image's two medians converted before their difference is taken (for a log or
inverse encoding a 0..1 error means more metres far away than near).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from pytorch_msssim import ssim

METRIC_NAMES = (
    "mask_iou", "mask_iou_image", "mask_dice", "depth_rmse", "depth_absrel", "depth_delta1",
    "depth_ssim", "depth_rmse_fg", "fg_distance_error", "depth_iou_seed",
)  # fmt: skip
# metrics where lower is better (the rest: higher is better)
LOWER_IS_BETTER = {"depth_rmse", "depth_absrel", "depth_rmse_fg", "fg_distance_error"}


def ssim_window(size: int, largest: int = 11) -> int:
    """The largest odd window up to ``largest`` that fits an image side of ``size``."""
    win = min(largest, size if size % 2 else size - 1)
    if win < 3:
        raise ValueError(f"images of {size} px are too small for SSIM")
    return win


SCORE_TERMS = ("mask_iou", "depth_rmse", "fg_distance_error")  # the headline, as scored


def score(
    metrics,
    mask_iou_weight: float = 1.0,
    depth_rmse_weight: float = 1.0,
    fg_distance_weight: float = 1.0,
):
    """One number to rank runs by, higher is better: weighted mask_iou - depth_rmse -
    fg_distance_error (floats, or columns of a table). A term of weight 0 is not read."""
    weights = (mask_iou_weight, -depth_rmse_weight, -fg_distance_weight)
    weights = dict(zip(SCORE_TERMS, weights, strict=True))
    return sum(w * metrics[name] for name, w in weights.items() if w)


def spread(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of one metric over several runs (seeds);
    the deviation is nan for a single run."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("spread of no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, var**0.5


def verdict(baseline, variant, lower_is_better: bool = False) -> tuple[float, str]:
    """The seeds' spread (the larger of the two runs' ranges) and ``better``, ``same`` or
    ``worse`` for the variant's mean against the baseline's: a difference within the spread
    is the same."""
    spread = max(max(baseline) - min(baseline), max(variant) - min(variant))
    gain = sum(variant) / len(variant) - sum(baseline) / len(baseline)
    gain = -gain if lower_is_better else gain
    return spread, "better" if gain > spread else "worse" if gain < -spread else "same"


def spread_text(mean: float, std: float, digits: int = 4) -> str:
    """``mean ± std``; the mean alone when there is no deviation (one run), a dash when there
    is no value."""
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_spread(values, digits: int = 4) -> str:
    """``mean ± std`` over several runs, or the one value alone."""
    return spread_text(*spread(values), digits)


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image median of ``values`` where ``mask``; NaN for an empty mask. (B,...) -> (B,)."""
    v = values.flatten(1)
    v = v if v.dtype == torch.float64 else v.float()
    m = mask.flatten(1).bool()
    v = torch.where(m, v, torch.full_like(v, float("inf")))
    count = m.sum(1)
    ordered = v.sort(dim=1).values
    index = ((count - 1).clamp(min=0) // 2).unsqueeze(1)  # lower median, as torch.median
    median = ordered.gather(1, index).squeeze(1)
    return torch.where(count > 0, median, torch.full_like(median, float("nan")))


class MetricAccumulator:
    """Sums that make the metrics exact over any batching; ``compute`` returns floats.
    ``to_metres``: stored depth -> metres (tensors in, tensors out), for
    ``fg_distance_error_m``."""

    def __init__(self, to_metres: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.sums: dict[str, torch.Tensor] = {}
        self.to_metres = to_metres

    @classmethod
    def of(cls, sums: dict[str, torch.Tensor]) -> MetricAccumulator:
        acc = cls()
        acc.sums = dict(sums)
        return acc

    def add_loss(self, loss: torch.Tensor) -> None:
        """A training batch's mean loss: ``compute`` reports their mean as ``loss``."""
        self._add("loss_sum", loss)
        self._add("loss_batches", torch.tensor(1.0))

    def mean_loss(self) -> float:
        return float(self.sums["loss_sum"] / self.sums["loss_batches"])

    def _add(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().double()
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    @torch.no_grad()
    def update(self, mask_prob, depth_pred, mask, depth) -> None:
        """Probabilities / predictions and truths, all (B,1,H,W) in [0, 1].

        Every sum is taken in float64, SSIM included: a float32 sum or a float32 SSIM
        depends on how the batch is split and on the CPU's kernels (SSIM's variances are
        differences of nearly equal window means, divided by C2 = 9e-4), so the metrics of
        one model would differ with the batch size. In float64 they agree to ~1e-12."""
        depth_pred, depth = depth_pred.double(), depth.double()
        truth = mask > 0.5
        pred = mask_prob > 0.5
        inter = (pred & truth).flatten(1).sum(1).double()
        union = (pred | truth).flatten(1).sum(1).double()
        sizes = pred.flatten(1).sum(1).double() + truth.flatten(1).sum(1).double()
        self._add("inter", inter.sum())
        self._add("union", union.sum())
        self._add("sizes", sizes.sum())
        # an image with empty truth and empty prediction is a perfect 1
        self._add("iou_image", torch.where(union > 0, inter / union.clamp(min=1), 1.0).sum())
        self._add("images", torch.tensor(float(len(mask))))

        valid = depth > 0
        err = depth_pred - depth
        self._add("sq", (err.square() * valid).sum())
        self._add("valid", valid.sum())
        self._add("absrel", ((err.abs() / depth.clamp(min=1e-6)) * valid).sum())
        ratio = torch.maximum(
            depth_pred / depth.clamp(min=1e-6), depth / depth_pred.clamp(min=1e-6)
        )
        self._add("delta1", ((ratio < 1.25) & valid).sum())
        win = ssim_window(min(depth.shape[-2:]))
        per_image = ssim(depth_pred, depth, data_range=1.0, win_size=win, size_average=False)
        self._add("ssim", per_image.sum())
        self._add("sq_fg", (err.square() * truth).sum())
        self._add("fg_pixels", truth.sum())
        median_pred, median_true = masked_median(depth_pred, truth), masked_median(depth, truth)
        gap = (median_pred - median_true).abs()
        has_fg = ~torch.isnan(gap)
        self._add("fg_gap", torch.where(has_fg, gap, 0.0).sum())
        self._add("fg_images", has_fg.sum())
        if self.to_metres is not None:
            gap_m = (self.to_metres(median_pred) - self.to_metres(median_true)).abs()
            self._add("fg_gap_m", torch.where(has_fg, gap_m, 0.0).sum())
        dp, dt = depth_pred > 0.5, depth > 0.5
        self._add("d_inter", (dp & dt).sum())
        self._add("d_union", (dp | dt).sum())

    def compute(self) -> dict[str, float]:
        s = {k: float(v) for k, v in self.sums.items()}
        if not s:
            return {}

        def ratio(a, b, empty=float("nan")):
            return s[a] / s[b] if s[b] else empty

        out = {"loss": ratio("loss_sum", "loss_batches")} if "loss_batches" in s else {}
        if "images" not in s:  # losses only: no batch was measured
            return out
        out |= {
            "mask_iou": ratio("inter", "union", 1.0),
            "mask_iou_image": ratio("iou_image", "images"),
            "mask_dice": 2 * s["inter"] / s["sizes"] if s["sizes"] else 1.0,
            "depth_rmse": ratio("sq", "valid") ** 0.5,
            "depth_absrel": ratio("absrel", "valid"),
            "depth_delta1": ratio("delta1", "valid"),
            "depth_ssim": ratio("ssim", "images"),
            "depth_rmse_fg": ratio("sq_fg", "fg_pixels") ** 0.5,
            "fg_distance_error": ratio("fg_gap", "fg_images"),
            "depth_iou_seed": ratio("d_inter", "d_union", 1.0),
        }
        if "fg_gap_m" in s:  # measured in metres too
            out["fg_distance_error_m"] = ratio("fg_gap_m", "fg_images")
        return out
