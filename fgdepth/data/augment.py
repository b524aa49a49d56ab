"""Paired augmentation on batches, on whatever device the batch lives.

Geometric transforms (flip, zoom-in crop, shift) move all four images identically. Photometric
ones (colour jitter, noise, RGB shift) touch only the inputs; cutout touches only fg_bg, as in
the original study. The ground truth gets nothing but the geometry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fgdepth.config import AugmentSpec


def _uniform(n, lo, hi, g, device):
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def geometric(batch: dict, spec: AugmentSpec, g: torch.Generator) -> dict:
    """The same random flip / zoom / shift for fg_bg, bg, mask and depth of each sample."""
    x = batch["fg_bg"]
    n, device = x.shape[0], x.device
    scale = 1.0 / _uniform(n, 1.0, 1.0 + spec.zoom, g, device)  # < 1: a crop
    room = 1.0 - scale  # how far the crop may move and stay inside the image
    tx = _uniform(n, -1, 1, g, device) * room
    ty = _uniform(n, -1, 1, g, device) * room
    flip = torch.where(torch.rand(n, generator=g, device=device) < spec.flip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = tx
    theta[:, 1, 2] = ty
    grids = {}  # inputs may be larger than the ground truth: one grid per size, same motion

    def grid_for(t):
        if t.shape[-2:] not in grids:
            grids[t.shape[-2:]] = F.affine_grid(theta, [n, 1, *t.shape[-2:]], align_corners=False)
        return grids[t.shape[-2:]].to(t.dtype)

    out = dict(batch)
    for key in ("fg_bg", "bg", "depth"):
        out[key] = F.grid_sample(
            batch[key], grid_for(batch[key]), mode="bilinear", padding_mode="border",
            align_corners=False,
        )  # fmt: skip
    out["mask"] = F.grid_sample(
        batch["mask"], grid_for(batch["mask"]), mode="nearest", padding_mode="border",
        align_corners=False,
    )  # fmt: skip
    return out


def photometric(batch: dict, spec: AugmentSpec, g: torch.Generator) -> dict:
    """Colour changes on fg_bg and bg only: a shared jitter, independent shifts and noise."""
    x = batch["fg_bg"]
    n, device = x.shape[0], x.device
    shape = (n, 1, 1, 1)
    brightness = _uniform(n, 1 - spec.jitter, 1 + spec.jitter, g, device).view(shape)
    contrast = _uniform(n, 1 - spec.jitter, 1 + spec.jitter, g, device).view(shape)
    saturation = _uniform(n, 1 - spec.jitter, 1 + spec.jitter, g, device).view(shape)
    out = dict(batch)
    for key in ("fg_bg", "bg"):
        img = batch[key] * brightness
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * contrast + mean
        grey = img.mean(dim=1, keepdim=True)
        img = (img - grey) * saturation + grey
        shift = (torch.rand(n, 3, 1, 1, generator=g, device=device) * 2 - 1) * spec.rgb_shift
        noise = torch.randn(img.shape, generator=g, device=device) * spec.noise
        out[key] = (img + shift + noise).clamp_(0, 1)
    return out


def cutout(batch: dict, spec: AugmentSpec, g: torch.Generator) -> dict:
    """A grey rectangle over fg_bg (not bg, not the ground truth) in some samples."""
    x = batch["fg_bg"]
    n, _, h, w = x.shape
    device = x.device
    side_h, side_w = max(1, int(h * spec.cutout_size)), max(1, int(w * spec.cutout_size))
    top = (torch.rand(n, generator=g, device=device) * (h - side_h + 1)).long()
    left = (torch.rand(n, generator=g, device=device) * (w - side_w + 1)).long()
    use = torch.rand(n, generator=g, device=device) < spec.cutout
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    box = (rows >= top.view(n, 1, 1)) & (rows < (top + side_h).view(n, 1, 1))
    box = box & (cols >= left.view(n, 1, 1)) & (cols < (left + side_w).view(n, 1, 1))
    box = box & use.view(n, 1, 1)
    out = dict(batch)
    out["fg_bg"] = torch.where(box.unsqueeze(1), torch.full_like(x, 0.5), x)
    return out


_IMAGES = ("fg_bg", "bg", "mask", "depth")


def flip(batch: dict, p: float, g: torch.Generator) -> dict:
    """A horizontal flip of all four images of each sample with probability ``p``: what
    ``geometric`` does without zoom, without resampling."""
    x = batch["fg_bg"]
    flipped = torch.rand(x.shape[0], generator=g, device=x.device) < p
    where = flipped.view(-1, 1, 1, 1)
    return {k: torch.where(where, v.flip(-1), v) if k in _IMAGES else v for k, v in batch.items()}


def augment(batch: dict, spec: AugmentSpec, g: torch.Generator) -> dict:
    """All of the above in order; a no-op spec returns the batch unchanged."""
    if spec.zoom:
        batch = geometric(batch, spec, g)
    elif spec.flip:
        batch = flip(batch, spec.flip, g)
    if spec.jitter or spec.rgb_shift or spec.noise:
        batch = photometric(batch, spec, g)
    if spec.cutout:
        batch = cutout(batch, spec, g)
    return batch
