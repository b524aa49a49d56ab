"""Reference predictions that every trained model should beat, scored like a model.

- mask: classical background subtraction: |fg_bg − bg| (largest over the colour channels),
  a per-image Otsu threshold, then a morphological opening and closing (3×3);
- depth: a constant map, the per-pixel mean depth of the train split;
- the foreground's distance (``fg_distance_error``), both read off the true mask: one distance
  for every object, the train split's median, and a least-squares fit of the distance to the
  silhouette's lowest row and height (an object standing lower in the picture is nearer, a
  taller one too).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fgdepth.data.cache import ArrayCache
from fgdepth.metrics import MetricAccumulator, masked_median


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


def silhouette_features(mask: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) mask -> (B,5) float64: 1, bottom, height, bottom·height, bottom², where
    bottom = (lowest row + 1) / H is the silhouette's lower edge and height = (lowest row −
    top row + 1) / H its extent, both in 0..1. Rows of an empty mask are meaningless (the
    callers drop them)."""
    rows = (mask[:, 0] > 0.5).any(2)  # (B,H): the rows the object covers
    h = rows.shape[1]
    top = rows.byte().argmax(1)  # argmax gives the first maximum: the first row with object
    lowest = h - 1 - rows.flip(1).byte().argmax(1)
    bottom = (lowest + 1).double() / h
    height = (lowest - top + 1).double() / h
    ones = torch.ones_like(bottom)
    return torch.stack([ones, bottom, height, bottom * height, bottom.square()], 1)


def foreground_table(
    cache: ArrayCache, rows: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Silhouette features (N,5) and true distance (N,), the median depth inside the true
    mask as ``fg_distance_error`` takes it, of the ``rows`` that have a foreground; images
    with an empty mask are left out, as the metric leaves them out."""
    features, distances = [], []
    for start in range(0, len(rows), batch_size):
        batch = cache.batch(rows[start : start + batch_size])
        truth = batch["mask"] > 0.5
        distance = masked_median(batch["depth"].double(), truth)  # NaN for an empty mask
        has_fg = ~torch.isnan(distance)
        features.append(silhouette_features(batch["mask"])[has_fg].numpy())
        distances.append(distance[has_fg].numpy())
    if not features:
        return np.zeros((0, 5)), np.zeros(0)
    return np.concatenate(features), np.concatenate(distances)


def fit_silhouette(features: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Least-squares weights (5,) of ``silhouette_features`` for the distance; NaN without a
    foreground to fit on (zeros would pass for a fit)."""
    if not len(distance):
        return np.full(features.shape[1], np.nan)
    weights, *_ = np.linalg.lstsq(
        features.astype(np.float64), distance.astype(np.float64), rcond=None
    )
    return weights


def _mean_abs_error(predicted: np.ndarray | float, distance: np.ndarray) -> float:
    return float(np.abs(predicted - distance).mean()) if len(distance) else float("nan")


def distance_references(
    cache: ArrayCache, train_rows: np.ndarray, test_rows: np.ndarray, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """``fg_distance_error`` on ``test_rows`` of the two distance references, fitted on
    ``train_rows``: {'constant_distance': {...}, 'silhouette_geometry': {...}}. Each predicts
    one distance per object; only the distance metric is theirs to report, as a constant
    depth map would say nothing about the depth metrics."""
    train_x, train_d = foreground_table(cache, train_rows, batch_size)
    test_x, test_d = foreground_table(cache, test_rows, batch_size)
    median = float(np.median(train_d)) if len(train_d) else float("nan")
    fitted = np.clip(test_x @ fit_silhouette(train_x, train_d), 0.0, 1.0)  # depth is in [0, 1]
    return {
        "constant_distance": {"fg_distance_error": _mean_abs_error(median, test_d)},
        "silhouette_geometry": {"fg_distance_error": _mean_abs_error(fitted, test_d)},
    }


def reference_metrics(
    cache: ArrayCache, train_rows: np.ndarray, test_rows: np.ndarray, batch_size: int = 64
) -> dict[str, dict[str, float]]:
    """Metrics of the references on ``test_rows``: {'background_subtraction': {...mask
    metrics}, 'mean_depth': {...depth metrics (all computed)}, 'constant_distance':
    {'fg_distance_error': ...}, 'silhouette_geometry': {'fg_distance_error': ...}}."""
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
        **distance_references(cache, train_rows, test_rows),
    }
