"""What every model offers: forward(fg_bg, bg) -> (mask_logits, depth_logits) and named
parameter groups (``trunk``: shared layers, ``mask``: mask-only, ``depth``: depth-only).

A model class declares what a config is checked against (its group names, size multiple,
input scale and options) as class data, so nothing has to build a model to check a config.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from fgdepth.registry import Registry

MODELS = Registry("model")


class DepthMaskModel(nn.Module):
    """Base class: subclasses fill ``groups`` with lists of submodules, by name, one list for
    each of ``group_names``."""

    groups: dict[str, list[nn.Module]]
    group_names: ClassVar[tuple[str, ...]] = ("trunk", "mask", "depth")
    # Networks whose strides must divide the output side.
    size_multiple: ClassVar[int] = 1
    # Inputs are this many times the outputs' side (fg_bg, bg at s*H; mask, depth at H).
    input_scale: int = 1

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Raise ValueError for options the model cannot be built with, without building it."""

    @classmethod
    def input_scale_of(cls, **options: Any) -> int:
        """The ``input_scale`` a model built with ``options`` has."""
        return cls.input_scale

    @classmethod
    def eval_passes_of(cls, **options: Any) -> int:
        """Forward passes per prediction (eval mode) of a model built with ``options``."""
        return 1

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The options the model takes, with their defaults."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k != "self"}

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


def model_class(name: str) -> type[DepthMaskModel]:
    """The class registered as ``name`` (KeyError listing the valid names)."""
    return MODELS.get(name)


def build_model(name: str, **kwargs) -> DepthMaskModel:
    return MODELS.build(name, **kwargs)


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
