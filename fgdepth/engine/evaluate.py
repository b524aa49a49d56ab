"""Evaluation and prediction over cached samples, batched on the device."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fgdepth.config import EvalConfig
from fgdepth.data.cache import ArrayCache, ScaledInputCache
from fgdepth.engine.distributed import SINGLE, World, shard, sum_dicts
from fgdepth.engine.precision import autocast
from fgdepth.metrics import MetricAccumulator

INPUTS = ("fg_bg", "bg", "mask", "depth")


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    """The model's inputs and targets on ``device``; images channels-last when asked (the
    layout that oneDNN and cuDNN convolutions run fastest in)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(device, non_blocking=True).contiguous(memory_format=fmt)
        for k, v in batch.items()
        if k in INPUTS
    }


@torch.no_grad()
def predict(model: nn.Module, fg_bg, bg, precision: str = "fp32"):
    """Mask probability and depth, each (B,1,H,W) float in [0, 1]."""
    with autocast(fg_bg.device, precision):
        mask_logits, depth_logits = model(fg_bg, bg)
    return torch.sigmoid(mask_logits.float()), torch.sigmoid(depth_logits.float())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    cache: ArrayCache | ScaledInputCache,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EvalConfig.batch_size,
    precision: str = "fp32",
    channels_last: bool = False,
    world: World = SINGLE,
) -> dict[str, float]:
    """All metrics over ``indices`` (model put in eval mode, restored after). On several ranks
    each evaluates its share and the sums are added, so every rank gets the same metrics."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    indices = shard(np.asarray(indices), world)
    for start in range(0, len(indices), batch_size):
        batch = to_device(cache.batch(indices[start : start + batch_size]), device, channels_last)
        mask, depth = predict(model, batch["fg_bg"], batch["bg"], precision)
        acc.update(mask, depth, batch["mask"], batch["depth"])
    model.train(was_training)
    return MetricAccumulator.of(sum_dicts(acc.sums, world)).compute()


def _image(chw: torch.Tensor, size: int) -> np.ndarray:
    """(C,H,W) in [0, 1] -> (size, size, C) uint8; inputs read at a larger size are shrunk to
    the predictions' size."""
    if chw.shape[-1] != size:
        chw = F.interpolate(chw[None].float(), size=(size, size), mode="area")[0]
    return (chw.permute(1, 2, 0).cpu().float().numpy() * 255).round().astype(np.uint8)


@torch.no_grad()
def sample_predictions(model, cache, indices, device, precision="fp32") -> list[dict]:
    """The fixed picture samples: inputs, truths and predictions as (H,W[,3]) numpy arrays."""
    if len(indices) == 0:
        return []
    was_training = model.training
    model.eval()
    batch = to_device(cache.batch(np.asarray(indices)), device)
    mask, depth = predict(model, batch["fg_bg"], batch["bg"], precision)
    model.train(was_training)
    out = []
    for i in range(len(mask)):
        out.append({
            "fg_bg": _image(batch["fg_bg"][i], mask.shape[-1]),
            "bg": _image(batch["bg"][i], mask.shape[-1]),
            "mask": batch["mask"][i, 0].cpu().numpy(),
            "mask_pred": mask[i, 0].cpu().numpy(),
            "depth": batch["depth"][i, 0].cpu().numpy(),
            "depth_pred": depth[i, 0].cpu().numpy(),
        })  # fmt: skip
    return out
