"""The object's distance read where it stands: a test-time correction of the depth map.

An object that stands on the scene is as far away as the point it stands on, and that point's
depth shows just below the object's lowest pixels, on the floor, which both images show. So
after the forward pass, inside the predicted mask, the depth map is shifted by one number per
image, so that its median inside the mask equals the median of the predicted depth just below
the mask's lowest pixels: the object's own shape of depth is kept, its level is read
at its feet.

Only the columns whose lowest mask pixel lies within ``feet`` rows of the object's lowest row
count (the feet or legs, not an arm held out), each read ``gap`` rows below its lowest mask
pixel. The floor nearest the feet is read: further down it is nearer the
camera than the point the object stands on (on three data families, reading one row below the
feet placed the object better than two or three rows or a band of two, measured on the true
depth and on the network's). An image keeps its map where the mask is empty or the row read
falls off the image's bottom edge (an object cut off by the frame shows no point it stands
on). Values are logits: the sigmoid keeps medians, so the shift is the same in depth.

A network's depth just below the feet can be biased: its map is smooth, and the object it
predicts in front of the floor pulls the floor's depth toward its own (on rooms, objects on the
floor were read 0.05 too near on average, where the same rule on the true depth is within
0.005). ``fit_contact`` measures that on rows the network did not train on: a least-squares
line from the level read to the object's true depth, ``depth = a + b * level``, that the
readout then applies (``fit``; (0, 1) reads the level as it is).
"""

from __future__ import annotations

import torch

EPS = 1e-4  # a level fitted outside (0, 1) is held just inside it: its logit stays finite
MIN_ROWS = 30  # fewer objects read than this: no line is fitted (the level is read as it is)


def contact_level(
    mask_logits: torch.Tensor, depth_logits: torch.Tensor, gap: int = 1, feet: int = 3
) -> torch.Tensor:
    """Each image's depth logit just below the object's feet, (B,); NaN where none is read."""
    b, _, h, w = depth_logits.shape
    inside = mask_logits > 0
    rows = torch.arange(h, device=depth_logits.device).view(1, 1, h, 1)
    lowest = torch.where(inside, rows, -1).amax(dim=2)  # (B,1,W): per column, -1 when empty
    bottom = lowest.amax(dim=2, keepdim=True)  # (B,1,1): the object's lowest row
    under = (lowest >= 0) & (lowest >= bottom - feet)  # the columns it stands on
    depth = depth_logits.float()
    at = lowest + gap
    read = under & (at < h)
    value = depth.gather(2, at.clamp(0, h - 1).unsqueeze(2)).squeeze(2)  # (B,1,W)
    return torch.where(read, value, torch.nan).reshape(b, -1).nanmedian(dim=1).values


def contact_readout(
    mask_logits: torch.Tensor,
    depth_logits: torch.Tensor,
    gap: int = 1,
    feet: int = 3,
    fit: torch.Tensor | None = None,
) -> torch.Tensor:
    """The depth logits (B,1,H,W) with each image's object level read at its feet, through
    the line ``fit`` (a, b) in depth where given."""
    b = depth_logits.shape[0]
    inside = mask_logits > 0
    depth = depth_logits.float()
    level = contact_level(mask_logits, depth, gap, feet)  # NaN: none
    if fit is not None:
        line = fit[0] + fit[1] * torch.sigmoid(level)
        level = torch.logit(line.clamp(EPS, 1 - EPS))
    within = torch.where(inside, depth, torch.nan).reshape(b, -1).nanmedian(dim=1).values
    shift = torch.nan_to_num(level - within, nan=0.0).view(b, 1, 1, 1)
    return torch.where(inside, depth + shift, depth).to(depth_logits.dtype)


def fit_contact(levels: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """The least-squares line (a, b) from the levels read (logits, NaN where none was read) to
    the objects' true depths (in [0, 1], NaN without an object): (0, 1) from fewer than
    ``MIN_ROWS`` objects or levels that hardly vary. The slope is held within [0.5, 2] (the
    intercept then fitted for it): a line much steeper or flatter would say the levels read
    carry little of the depth, which a small sample can also say by chance."""
    keep = ~(torch.isnan(levels) | torch.isnan(depths))
    x, y = torch.sigmoid(levels[keep].double()), depths[keep].double()
    if len(x) < MIN_ROWS or x.std() < 1e-3:
        return torch.tensor([0.0, 1.0])
    xc, yc = x - x.mean(), y - y.mean()
    slope = ((xc * yc).sum() / xc.square().sum()).clamp(0.5, 2.0)
    return torch.stack([y.mean() - slope * x.mean(), slope]).float()
