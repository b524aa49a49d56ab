"""Predicting image pairs of any size: (bg, fg_bg) images in, mask, depth and the
foreground's distance out, at each input's own size."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from fgdepth.data.format import DataError, _rgb
from fgdepth.engine.evaluate import predict as model_predict
from fgdepth.metrics import masked_median


@dataclass
class Prediction:
    mask_prob: np.ndarray  # (H, W) float32 in [0, 1], at the input's size
    depth: np.ndarray  # (H, W) float32 in [0, 1]
    distance: float  # median depth inside the predicted mask; NaN if the mask is empty

    @property
    def mask(self) -> np.ndarray:
        return self.mask_prob > 0.5


def _tensor(image: Image.Image, size: int) -> torch.Tensor:
    rgb = np.array(_rgb(image, size))  # (size, size, 3) uint8, a writable copy
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)


def _resize(values: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR)).clip(0, 1)


@torch.no_grad()
def predict_pairs(
    model: nn.Module, pairs: list[tuple[Image.Image, Image.Image]], size: int
) -> list[Prediction]:
    """(bg, fg_bg) pairs -> predictions at each fg_bg's own size (the model predicts at
    ``size``, from inputs at its ``input_scale`` times that)."""
    for bg, fg_bg in pairs:
        if bg.size != fg_bg.size:
            raise DataError(f"bg size {bg.size} differs from fg_bg size {fg_bg.size}")
    device = next(model.parameters()).device
    read = size * getattr(model, "input_scale", 1)
    fg = torch.stack([_tensor(fg_bg, read) for _, fg_bg in pairs]).to(device)  # (B, 3, H, W)
    bg = torch.stack([_tensor(b, read) for b, _ in pairs]).to(device)
    model.eval()
    mask, depth = model_predict(model, fg, bg)
    distances = masked_median(depth, mask > 0.5)  # at the model's size: the same median
    out = []
    for i, (_, fg_bg) in enumerate(pairs):
        width, height = fg_bg.size
        out.append(
            Prediction(
                _resize(mask[i, 0].cpu().numpy(), width, height),
                _resize(depth[i, 0].cpu().numpy(), width, height),
                float(distances[i]),
            )
        )
    return out
