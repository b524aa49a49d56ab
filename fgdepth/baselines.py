"""Reference predictions that every trained model should beat, scored like a model.

- mask: classical background subtraction: |fg_bg − bg| (largest over the colour channels),
  a per-image Otsu threshold, then a morphological opening and closing (3×3);
- depth: a constant map, the per-pixel mean depth of the train split.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fgdepth.data.cache import ArrayCache
from fgdepth.metrics import MetricAccumulator


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Per image Otsu threshold of values in [0, 1]: (B, ...) -> (B,)."""
    flat = values.flatten(1).clamp(0, 1)
    idx = (flat * (bins - 1)).round().long()
    hist = torch.zeros(flat.shape[0], bins, dtype=torch.float64)
    hist.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
    p = hist / hist.sum(1, keepdim=True)
    centres = torch.linspace(0, 1, bins, dtype=torch.float64)
    w0 = p.cumsum(1)
    mu = (p * centres).cumsum(1)
    mu_total = mu[:, -1:]
    between = (mu_total * w0 - mu) ** 2 / (w0 * (1 - w0)).clamp(min=1e-12)
    return centres[between.argmax(1)].float()


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(mask, 3, stride=1, padding=1)


def _erode(mask: torch.Tensor) -> torch.Tensor:
    return -F.max_pool2d(-mask, 3, stride=1, padding=1)


def background_subtraction(fg_bg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) images in [0, 1] -> (B,1,H,W) mask of 0/1."""
    diff = (fg_bg - bg).abs().amax(1, keepdim=True)  # (B,1,H,W)
    threshold = otsu_threshold(diff).view(-1, 1, 1, 1)
    mask = (diff > threshold).float()
    mask = _dilate(_erode(mask))  # opening: drops specks
    return _erode(_dilate(mask))  # closing: fills small holes


def mean_depth(cache: ArrayCache, rows: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """(1,1,H,W) per-pixel mean depth over ``rows``."""
    total, count = None, 0
    for start in range(0, len(rows), batch_size):
        depth = cache.batch(rows[start : start + batch_size])["depth"].double()
        total = depth.sum(0, keepdim=True) if total is None else total + depth.sum(0, keepdim=True)
        count += len(depth)
    return (total / max(count, 1)).float()


def reference_metrics(
    cache: ArrayCache, train_rows: np.ndarray, test_rows: np.ndarray, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Metrics of both references on ``test_rows``: {'background_subtraction': {...mask
    metrics}, 'mean_depth': {...depth metrics}} (all metric names computed for each)."""
    constant = mean_depth(cache, train_rows)
    acc = MetricAccumulator()
    for start in range(0, len(test_rows), batch_size):
        batch = cache.batch(test_rows[start : start + batch_size])
        mask = background_subtraction(batch["fg_bg"], batch["bg"])
        depth = constant.expand(len(mask), -1, -1, -1)
        acc.update(mask, depth, batch["mask"], batch["depth"])
    metrics = acc.compute()
    mask_keys = {k for k in metrics if k.startswith("mask_")}
    return {
        "background_subtraction": {k: v for k, v in metrics.items() if k in mask_keys},
        "mean_depth": {k: v for k, v in metrics.items() if k not in mask_keys},
    }
