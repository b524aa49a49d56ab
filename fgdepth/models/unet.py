"""``unet``: the default model, a light U-Net with a mask head and a depth head.

Most of the work happens at 1/2 to 1/16 resolution; only two thin heads run at full resolution,
where the seed network spends most of its FLOPs. The input adds |fg_bg - bg| to the two images:
the change between them is the strongest cue for the mask, and it costs nothing to compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgdepth.models.base import MODELS, DepthMaskModel, conv_bn_relu


class Stage(nn.Sequential):
    """Two 3x3 conv-BN-ReLU; the first may stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(conv_bn_relu(cin, cout, 3, stride), conv_bn_relu(cout, cout))


class Head(nn.Module):
    """Full resolution: upsampled decoder features + the input -> one logit map."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.body = conv_bn_relu(cin, hidden)
        self.out = nn.Conv2d(hidden, 1, 1)

    def forward(self, x):
        return self.out(self.body(x))


class UNet(DepthMaskModel):
    size_multiple = 16

    def __init__(self, width: int = 24, head: int = 16, context: bool = False):
        super().__init__()
        w = [width, width * 2, width * 4, width * 6, width * 8]  # 1/2 .. 1/32
        cin = 9
        self.encoder = nn.ModuleList(
            [
                Stage(cin, w[0], 2),  # 1/2
                Stage(w[0], w[1], 2),  # 1/4
                Stage(w[1], w[2], 2),  # 1/8
                Stage(w[2], w[3], 2),  # 1/16
            ]
        )
        # the whole image's features at every position of the 1/16 map: the room's layout and
        # the camera's pose set the depth everywhere, beyond the convolutions' reach
        self.context = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w[3], w[3], 1), nn.ReLU(inplace=True))
            if context
            else None
        )
        self.decoder = nn.ModuleList(
            [
                Stage(w[3] + w[2], w[2]),  # 1/8
                Stage(w[2] + w[1], w[1]),  # 1/4
                Stage(w[1] + w[0], w[0]),  # 1/2
            ]
        )
        self.mask_head = Head(w[0] + cin, head)
        self.depth_head = Head(w[0] + cin, head)
        self.groups = {
            "trunk": [self.encoder, self.decoder, *([self.context] if context else [])],
            "mask": [self.mask_head],
            "depth": [self.depth_head],
            "encoder": [self.encoder, *([self.context] if context else [])],
            "decoder": [self.decoder],
        }

    def forward(self, fg_bg, bg):
        x = torch.cat([fg_bg, bg, (fg_bg - bg).abs()], dim=1)  # (B, 9, H, W)
        skips = []
        y = x
        for stage in self.encoder:
            y = stage(y)
            skips.append(y)
        if self.context is not None:
            y = y + self.context(y)
        for stage, skip in zip(self.decoder, reversed(skips[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        y = torch.cat([y, x], dim=1)  # (B, w0 + 9, H, W)
        return self.mask_head(y), self.depth_head(y)


@MODELS.register("unet")
def unet(width: int = 24, head: int = 16, context: bool = False) -> UNet:
    return UNet(width=width, head=head, context=context)
