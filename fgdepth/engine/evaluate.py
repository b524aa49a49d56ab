"""Evaluation and prediction over cached samples, batched on the device."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fgdepth.config import EvalConfig
from fgdepth.data.batch import as_float
from fgdepth.engine.distributed import SINGLE, World, shard, sum_dicts
from fgdepth.engine.precision import autocast
from fgdepth.metrics import MetricAccumulator

INPUTS = ("fg_bg", "bg", "mask", "depth")


def to_device(
    batch: dict, device: torch.device, channels_last: bool = False, input_size: int | None = None
) -> dict:
    """The model's inputs and targets on ``device``, as float in [0, 1] (a loader's uint8 /
    uint16 batch is converted there: fewer bytes to copy); images channels-last when asked
    (the layout that oneDNN and cuDNN convolutions run fastest in). Inputs read at less than
    ``input_size`` (the source has fewer pixels) are upsampled to it on the device."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    moved = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k in INPUTS}
    out = as_float(moved)
    if input_size is not None:
        for key in ("fg_bg", "bg"):
            if out[key].shape[-1] != input_size:
                out[key] = F.interpolate(out[key], size=(input_size, input_size), mode="bilinear")
    return {k: v.contiguous(memory_format=fmt) for k, v in out.items()}


def input_size_of(model: nn.Module, data) -> int:
    """The side of the inputs ``model`` takes for ``data``'s output size."""
    return data.size * getattr(model, "input_scale", 1)


@torch.no_grad()
def predict(model: nn.Module, fg_bg, bg, precision: str = "fp32"):
    """Mask probability and depth, each (B,1,H,W) float in [0, 1]."""
    with autocast(fg_bg.device, precision):
        mask_logits, depth_logits = model(fg_bg, bg)
    return torch.sigmoid(mask_logits.float()), torch.sigmoid(depth_logits.float())


def device_batches(model: nn.Module, data, indices, device, batch_size: int, channels_last=False):
    """``indices`` of ``data`` in batches on ``device``, inputs at ``model``'s size; a batch
    whose every row was bad (``skip_bad``) is left out."""
    indices = np.asarray(indices)
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    size = input_size_of(model, data)
    for raw in data.batches(chunks):
        batch = to_device(raw, device, channels_last, size)
        if len(batch["mask"]):
            yield batch


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int = EvalConfig.batch_size,
    precision: str = "fp32",
    channels_last: bool = False,
    world: World = SINGLE,
    *,
    to_metres=None,
) -> dict[str, float]:
    """All metrics over ``indices`` of ``data`` (a cache or a stream: anything with
    ``batches``), the model put in eval mode and restored after. On several ranks each
    evaluates its share and the sums are added, so every rank gets the same metrics.
    ``to_metres`` (the data's ``DepthEncoding.to_metres``) adds ``fg_distance_error_m``."""
    was_training = model.training
    model.eval()
    acc = MetricAccumulator(to_metres)
    rows = shard(np.asarray(indices), world)
    for batch in device_batches(model, data, rows, device, batch_size, channels_last):
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
def sample_predictions(model, data, indices, device, precision="fp32") -> list[dict]:
    """The fixed picture samples: inputs, truths and predictions as (H,W[,3]) numpy arrays,
    each with its dataset ``row``."""
    if len(indices) == 0:
        return []
    was_training = model.training
    model.eval()
    batch = to_device(data.raw(np.asarray(indices)), device, input_size=input_size_of(model, data))
    mask, depth = predict(model, batch["fg_bg"], batch["bg"], precision)
    model.train(was_training)
    out = []
    for i in range(len(mask)):
        out.append({
            "row": int(indices[i]),
            "fg_bg": _image(batch["fg_bg"][i], mask.shape[-1]),
            "bg": _image(batch["bg"][i], mask.shape[-1]),
            "mask": batch["mask"][i, 0].cpu().numpy(),
            "mask_pred": mask[i, 0].cpu().numpy(),
            "depth": batch["depth"][i, 0].cpu().numpy(),
            "depth_pred": depth[i, 0].cpu().numpy(),
        })  # fmt: skip
    return out
