"""What every model offers: forward(fg_bg, bg) -> (mask_logits, depth_logits) and named
parameter groups (``trunk``: shared layers, ``mask``: mask-only, ``depth``: depth-only)."""

from __future__ import annotations

import torch
from torch import nn

from fgdepth.registry import Registry

MODELS = Registry("model")


class DepthMaskModel(nn.Module):
    """Base class: subclasses fill ``groups`` with lists of submodules, by name."""

    groups: dict[str, list[nn.Module]]

    def forward(self, fg_bg: torch.Tensor, bg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def group_modules(self, name: str) -> list[nn.Module]:
        if name not in self.groups:
            raise KeyError(
                f"unknown parameter group '{name}'; valid: {', '.join(sorted(self.groups))}"
            )
        return self.groups[name]

    def group_parameters(self, name: str) -> list[nn.Parameter]:
        return [p for m in self.group_modules(name) for p in m.parameters()]

    # Networks whose strides must divide the output side.
    size_multiple: int = 1
    # Inputs are this many times the outputs' side (fg_bg, bg at s*H; mask, depth at H).
    input_scale: int = 1


def build_model(name: str, **kwargs) -> DepthMaskModel:
    return MODELS.build(name, **kwargs)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
