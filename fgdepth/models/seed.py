"""``seed``: the original study's network (8,801,568 parameters), rebuilt from its description.

A shallow full-resolution mask branch whose 64-channel features also feed a residual
encoder-decoder for depth. Kept as the baseline that the default model is measured against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgdepth.models.base import MODELS, DepthMaskModel, conv_bn_relu


def _conv(cin, cout, k, stride=1):
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)


class Down(nn.Module):
    """Halve the size: (3x3 s2, 1x1, BN, ReLU), (3x3, 1x1, BN) + strided 1x1 shortcut, ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.first = nn.Sequential(
            _conv(cin, cout, 3, 2),
            _conv(cout, cout, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )
        self.second = nn.Sequential(
            _conv(cout, cout, 3), _conv(cout, cout, 1), nn.BatchNorm2d(cout)
        )
        self.shortcut = _conv(cin, cout, 1, 2)

    def forward(self, x):
        return F.relu(self.second(self.first(x)) + self.shortcut(x))


class Up(nn.Module):
    """After a x2 upsample: 3x3 transposed conv (stride 1), then (3x3, 1x1, BN, ReLU) twice."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.project = nn.ConvTranspose2d(cin, cout, 3, 1, 1, bias=False)
        self.body = nn.Sequential(
            _conv(cout, cout, 3),
            _conv(cout, cout, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            _conv(cout, cout, 3),
            _conv(cout, cout, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.body(self.project(x))


@MODELS.register("seed")
class SeedNet(DepthMaskModel):
    size_multiple = 16

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            conv_bn_relu(6, 32),
            nn.Sequential(
                nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False),  # depthwise
                nn.Conv2d(32, 64, 1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            ),
            conv_bn_relu(64, 128),
            _conv(128, 64, 3),
        )
        self.mask_out = _conv(64, 1, 3)
        self.down = nn.ModuleList([Down(64, 128), Down(128, 256), Down(256, 256), Down(256, 256)])
        self.up = nn.ModuleList([Up(256, 256), Up(256, 256), Up(256, 128), Up(128, 64)])
        self.depth_out = _conv(64, 1, 1)
        self.groups = {
            "trunk": [self.trunk],
            "mask": [self.mask_out],
            "depth": [self.down, self.up, self.depth_out],
        }

    def forward(self, fg_bg, bg):
        x = torch.cat([fg_bg, bg], dim=1)  # (B, 6, H, W)
        features = self.trunk(x)  # (B, 64, H, W)
        mask = self.mask_out(features)
        skips = []
        y = features
        for block in self.down:  # H/2 .. H/16
            y = block(y)
            skips.append(y)
        for i, block in enumerate(self.up):
            y = block(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
            if i < 3:
                y = y + skips[2 - i]  # the matching down-block output
        return mask, self.depth_out(y)
