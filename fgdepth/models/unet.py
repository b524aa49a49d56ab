"""``unet``: the default model, a light U-Net with a mask head and a depth head.

Most of the work happens at 1/2 to 1/16 resolution; only two thin heads run at full resolution,
where the seed network spends most of its FLOPs. The input adds |fg_bg - bg| to the two images:
the change between them is the strongest cue for the mask, and it costs nothing to compute.

With ``input_scale=2`` the model reads its inputs at twice the size of its outputs: each output
pixel sees the 2 x 2 input pixels it covers (stacked as channels), a 1x1 convolution mixes them,
and the network runs at the output size as before. An outline pixel then shows where within it
the outline runs, which a pixel of the output size only hints at through its blend of colours;
the extra cost is that one convolution and a wider first layer.

With ``depth_stride=2`` the depth head runs on the last decoder stage's features at half the
output size, and its map is upsampled bilinearly: depth varies smoothly within an object, the
mask is what must follow outlines pixel by pixel, so only the mask head keeps full resolution.

With ``test_flip=True`` a prediction (eval mode) is the mean of the logits for the image pair and
for its mirror image, flipped back: training flips the pairs, so both views are equally valid,
and their errors along the outlines differ. It costs a second forward pass, in eval mode only.

With ``rows=True`` the input gains one channel, each pixel's height in the image (-1 at the top,
+1 at the bottom). Convolutions see the same weights at every height, so without it a network
learns where it is only from the zero padding at the borders; yet where an object stands on the
ground, how far away it is follows the image row of its lowest point. The channel is unchanged by
the horizontal flips of training and of ``test_flip``.

With ``contact=True`` a prediction (eval mode) reads the object's level of depth at its feet:
inside the predicted mask the depth map is shifted so that its median is the depth predicted just
below the mask's lowest pixels, where the object stands (``fgdepth.models.contact``). With
``contact_fit=True`` as well, the level read goes through a line fitted before each test on rows
it did not train on (``contact_line``, set by the engine; saved with the weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fgdepth.models.base import MODELS, DepthMaskModel, conv_bn_relu
from fgdepth.models.contact import contact_level, contact_readout


class Stage(nn.Sequential):
    """``convs`` 3x3 conv-BN-ReLU (two by default); the first may stride."""

    def __init__(self, cin: int, cout: int, stride: int = 1, convs: int = 2):
        more = [conv_bn_relu(cout, cout) for _ in range(convs - 1)]
        super().__init__(conv_bn_relu(cin, cout, 3, stride), *more)


class Head(nn.Module):
    """Full resolution: upsampled decoder features + the input -> one logit map."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.body = conv_bn_relu(cin, hidden)
        self.out = nn.Conv2d(hidden, 1, 1)

    def forward(self, x):
        return self.out(self.body(x))


@MODELS.register("unet")
class UNet(DepthMaskModel):
    group_names = ("trunk", "mask", "depth", "encoder", "decoder")
    size_multiple = 16

    def __init__(
        self,
        width: int = 24,
        head: int = 16,
        context: bool = False,
        input_scale: int = 1,
        depth_stride: int = 1,
        decoder_convs: int = 2,
        test_flip: bool = False,
        rows: bool = False,
        contact: bool = False,
        contact_fit: bool = False,
    ):
        super().__init__()
        self.check_options(
            input_scale=input_scale, depth_stride=depth_stride, decoder_convs=decoder_convs
        )
        w = [width, width * 2, width * 4, width * 6]  # 1/2 .. 1/16
        self.input_scale, self.depth_stride = input_scale, depth_stride
        self.test_flip, self.rows = test_flip, rows
        self.contact, self.contact_fit = contact, contact and contact_fit
        if self.contact_fit:  # (a, b): depth = a + b * level read; (0, 1) until fitted
            self.register_buffer("contact_line", torch.tensor([0.0, 1.0]))
        cin = 10 if rows else 9
        # the sub-pixels of each output pixel, as channels, mixed down to a few features
        self.detail = conv_bn_relu(cin * input_scale**2, 16, 1) if input_scale > 1 else None
        cin = 16 if input_scale > 1 else cin
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
                Stage(w[3] + w[2], w[2], convs=decoder_convs),  # 1/8
                Stage(w[2] + w[1], w[1], convs=decoder_convs),  # 1/4
                Stage(w[1] + w[0], w[0], convs=decoder_convs),  # 1/2
            ]
        )
        self.mask_head = Head(w[0] + cin, head)
        self.depth_head = Head(w[0] + cin if depth_stride == 1 else w[0], head)
        extra = [m for m in (self.detail, self.context) if m is not None]
        self.groups = {
            "trunk": [self.encoder, self.decoder, *extra],
            "mask": [self.mask_head],
            "depth": [self.depth_head],
            "encoder": [self.encoder, *extra],
            "decoder": [self.decoder],
        }

    @classmethod
    def check_options(
        cls, input_scale: int = 1, depth_stride: int = 1, decoder_convs: int = 2, **_
    ) -> None:
        if input_scale < 1:
            raise ValueError(f"input_scale must be 1 or more, got {input_scale}")
        if depth_stride not in (1, 2):
            raise ValueError(f"depth_stride must be 1 or 2, got {depth_stride}")
        if decoder_convs not in (1, 2):
            raise ValueError(f"decoder_convs must be 1 or 2, got {decoder_convs}")

    @classmethod
    def input_scale_of(cls, input_scale: int = 1, **_) -> int:
        return input_scale

    @classmethod
    def eval_passes_of(cls, test_flip: bool = False, **_) -> int:
        return 2 if test_flip else 1

    def forward(self, fg_bg, bg):
        if self.training:
            return self.logits(fg_bg, bg)
        mask, depth = self.predicted_logits(fg_bg, bg)
        if self.contact:
            line = self.contact_line if self.contact_fit else None
            depth = contact_readout(mask, depth, fit=line)
        return mask, depth

    def predicted_logits(self, fg_bg, bg):
        """A prediction's logits before the contact readout (averaged with the mirror image's
        where ``test_flip``)."""
        mask, depth = self.logits(fg_bg, bg)
        if self.test_flip:
            mirror_mask, mirror_depth = self.logits(fg_bg.flip(-1), bg.flip(-1))
            mask, depth = (mask + mirror_mask.flip(-1)) / 2, (depth + mirror_depth.flip(-1)) / 2
        return mask, depth

    def contact_levels(self, fg_bg, bg) -> torch.Tensor:
        """Each image's depth level read at the object's feet (logits, (B,), NaN where none),
        before any fitted line: what ``contact_line`` is fitted on."""
        return contact_level(*self.predicted_logits(fg_bg, bg))

    def logits(self, fg_bg, bg):
        """One forward pass: (mask logits, depth logits)."""
        x = torch.cat([fg_bg, bg, (fg_bg - bg).abs()], dim=1)  # (B, 9, sH, sW)
        if self.rows:  # each pixel's height in the image, -1 (top) .. +1 (bottom)
            b, _, h, w = x.shape
            row = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
            x = torch.cat([x, row.view(1, 1, h, 1).expand(b, 1, h, w)], dim=1)
        if self.detail is not None:
            x = self.detail(F.pixel_unshuffle(x, self.input_scale))  # (B, 16, H, W)
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
        half = y  # (B, w0, H/2, W/2)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        y = torch.cat([y, x], dim=1)  # (B, w0 + 9, 10 or 16, H, W)
        if self.depth_stride == 1:
            return self.mask_head(y), self.depth_head(y)
        depth = F.interpolate(
            self.depth_head(half), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.mask_head(y), depth
