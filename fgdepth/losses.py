"""Losses by name. Every loss takes logits and a target in [0, 1], both (B,1,H,W); a loss marked
``uses_foreground`` also takes ``fg``, the true mask (B,1,H,W), to weigh the object's pixels.

``dice`` is a soft Dice on the sigmoid (a softmax over a 1-channel output is constant, so a
softmax Dice has no gradient there); ``ssim`` is 1 - SSIM of the sigmoid with ``data_range=1``
and a window that fits the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _ssim

from fgdepth.metrics import ssim_window
from fgdepth.registry import Registry

LOSSES = Registry("loss")


def uses_foreground(fn):
    """Marks a loss that reads the true mask: ``HeadLoss`` passes it as ``fg=``."""
    fn.uses_foreground = True
    return fn


@LOSSES.register("bce")
def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


@LOSSES.register("dice")
def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged. ``eps`` keeps empty masks finite."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    target = target.float().flatten(1)
    inter = (prob * target).sum(1)
    dice = (2 * inter + eps) / (prob.sum(1) + target.sum(1) + eps)
    return 1 - dice.mean()


@LOSSES.register("ssim")
def ssim_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits.float())
    win = ssim_window(min(prob.shape[-2:]))
    return 1 - _ssim(prob, target.float(), data_range=1.0, win_size=win, size_average=True)


@LOSSES.register("lovasz")
def lovasz_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovasz hinge (Berman et al., 2018) per image, averaged: a convex surrogate of
    1 - IoU of the mask that the logits' signs give, so it weighs pixels by what they cost
    the IoU (outlines of small foregrounds) rather than one by one like BCE."""
    truth = (target.float().flatten(1) > 0.5).float()
    errors = 1.0 - logits.float().flatten(1) * (2.0 * truth - 1.0)
    errors, order = torch.sort(errors, dim=1, descending=True)
    truth = torch.gather(truth, 1, order)
    positives = truth.sum(1, keepdim=True)
    intersection = positives - truth.cumsum(1)
    union = positives + (1.0 - truth).cumsum(1)
    jaccard = 1.0 - intersection / union
    # the gradient of the Lovasz extension: the IoU loss added by each pixel in that order
    steps = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    return (F.relu(errors) * steps).sum(1).mean()


@LOSSES.register("l1")
def l1_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(torch.sigmoid(logits.float()), target.float())


@LOSSES.register("fg_l1")
@uses_foreground
def fg_l1_loss(logits: torch.Tensor, target: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """|depth error| over the true foreground's pixels, per image, averaged over the images
    that have a foreground (0 when none has one).

    The object's distance (the metric ``fg_distance_error``) is read inside the mask, and the
    object covers a few per cent of the image: in a whole-image L1 or SSIM its pixels weigh
    that little, so the network can place the object at the background's depth behind it and
    lose almost nothing. Here each object weighs the same whatever its size."""
    fg = (fg > 0.5).float().flatten(1)  # (B, HW)
    err = (torch.sigmoid(logits.float()) - target.float()).abs().flatten(1)  # (B, HW)
    pixels = fg.sum(1)
    has = pixels > 0
    per_image = (err * fg).sum(1) / pixels.clamp(min=1)
    return per_image[has].sum() / has.sum().clamp(min=1)


class HeadLoss:
    """A weighted sum of named losses for one head, e.g. ``{"ssim": 1.0, "l1": 0.1}``."""

    def __init__(self, terms: dict[str, float]):
        if not terms:
            raise ValueError("a head needs at least one loss")
        self.terms = {name: (LOSSES.get(name), float(w)) for name, w in terms.items()}

    def __call__(self, logits, target, fg=None) -> torch.Tensor:
        """``fg``, the true mask, is needed when a term ``uses_foreground``."""
        return sum(w * self._term(fn, logits, target, fg) for fn, w in self.terms.values())

    @staticmethod
    def _term(fn, logits, target, fg) -> torch.Tensor:
        if not getattr(fn, "uses_foreground", False):
            return fn(logits, target)
        if fg is None:
            raise ValueError(f"the loss '{fn.__name__}' needs the true mask (fg=)")
        return fn(logits, target, fg=fg)
