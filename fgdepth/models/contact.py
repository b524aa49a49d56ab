"""The object's distance read where it stands: a test-time correction of the depth map.

An object that stands on the scene is as far away as the point it stands on, and that point's
depth shows just below the object's lowest pixels, on the floor, which both images show. So
after the forward pass, inside the predicted mask, the depth map is shifted by one number per
image, so that its median inside the mask equals the median of the predicted depth in a thin band
just below the mask's lowest pixels: the object's own shape of depth is kept, its level is read
at its feet.

Only the columns whose lowest mask pixel lies within ``feet`` rows of the object's lowest row
count (the feet or legs, not an arm held out), each read ``gap`` rows below its lowest mask
pixel and over ``band`` rows. The floor nearest the feet is read: further down it is nearer the
camera than the point the object stands on (on three data families, reading one row below the
feet placed the object better than two or three rows, measured on the true depth and on the
network's). An image keeps its map where the mask is empty or its band falls off the image's
bottom edge (an object cut off by the frame shows no point it stands on). Values are logits:
the sigmoid keeps medians, so the shift is the same in depth.
"""

from __future__ import annotations

import torch


def contact_readout(
    mask_logits: torch.Tensor,
    depth_logits: torch.Tensor,
    gap: int = 1,
    band: int = 1,
    feet: int = 3,
) -> torch.Tensor:
    """The depth logits (B,1,H,W) with each image's object level read at its feet."""
    b, _, h, w = depth_logits.shape
    inside = mask_logits > 0
    rows = torch.arange(h, device=depth_logits.device).view(1, 1, h, 1)
    lowest = torch.where(inside, rows, -1).amax(dim=2)  # (B,1,W): per column, -1 when empty
    bottom = lowest.amax(dim=2, keepdim=True)  # (B,1,1): the object's lowest row
    under = (lowest >= 0) & (lowest >= bottom - feet)  # the columns it stands on
    depth = depth_logits.float()
    samples = []
    for k in range(gap, gap + band):
        at = lowest + k
        valid = under & (at < h)
        value = depth.gather(2, at.clamp(0, h - 1).unsqueeze(2)).squeeze(2)  # (B,1,W)
        samples.append(torch.where(valid, value, torch.nan))
    below = torch.cat(samples, dim=2).reshape(b, -1)  # (B, band*W), NaN where not read
    level = below.nanmedian(dim=1).values  # (B,), NaN where nothing was read
    within = torch.where(inside, depth, torch.nan).reshape(b, -1).nanmedian(dim=1).values
    shift = torch.nan_to_num(level - within, nan=0.0).view(b, 1, 1, 1)
    return torch.where(inside, depth + shift, depth).to(depth_logits.dtype)
