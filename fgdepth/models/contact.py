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
"""

from __future__ import annotations

import torch


def contact_readout(
    mask_logits: torch.Tensor,
    depth_logits: torch.Tensor,
    gap: int = 1,
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
    at = lowest + gap
    read = under & (at < h)
    value = depth.gather(2, at.clamp(0, h - 1).unsqueeze(2)).squeeze(2)  # (B,1,W)
    level = torch.where(read, value, torch.nan).reshape(b, -1).nanmedian(dim=1).values  # NaN: none
    within = torch.where(inside, depth, torch.nan).reshape(b, -1).nanmedian(dim=1).values
    shift = torch.nan_to_num(level - within, nan=0.0).view(b, 1, 1, 1)
    return torch.where(inside, depth + shift, depth).to(depth_logits.dtype)
