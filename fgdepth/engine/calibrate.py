"""After a stage, before its test: a model that reads the object's level at its feet through a
fitted line (``contact_fit``) has that line fitted on the validation rows, which it did not
train on (``fgdepth.models.contact.fit_contact``), and set back to the level as read when the
next stage starts, so that no validation metric is read through a line fitted on its rows."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fgdepth.engine.evaluate import device_batches
from fgdepth.engine.precision import autocast
from fgdepth.metrics import masked_median
from fgdepth.models.contact import fit_contact

MAX_ROWS = 2000  # the validation rows read at most: a line of two numbers needs no more


@torch.no_grad()
def fit_readout(
    model: nn.Module,
    data,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int,
    precision: str = "fp32",
    channels_last: bool = False,
) -> torch.Tensor | None:
    """Fit ``model``'s ``contact_line`` on ``indices`` (the first ``MAX_ROWS``) of ``data``;
    the line (a, b), or None for a model without one. Every rank reads the same rows with the
    same weights, so every rank fits the same line."""
    core = getattr(model, "module", model)  # under DDP: the network it wraps
    if not getattr(core, "contact_fit", False):
        return None
    was_training = core.training
    core.eval()
    rows = np.asarray(indices)[:MAX_ROWS]
    levels, depths = [], []
    for batch in device_batches(core, data, rows, device, batch_size, channels_last):
        with autocast(device, precision):
            levels.append(core.contact_levels(batch["fg_bg"], batch["bg"]).float().cpu())
        depths.append(masked_median(batch["depth"], batch["mask"] > 0.5).cpu())
    core.train(was_training)
    levels = torch.cat(levels) if levels else torch.empty(0)
    depths = torch.cat(depths) if depths else torch.empty(0)
    line = fit_contact(levels, depths)
    core.contact_line.copy_(line.to(core.contact_line.device))
    return line


def reset_readout(model: nn.Module) -> None:
    """``model``'s ``contact_line`` back to the level as read (0, 1), if it has one: a line
    fitted for one stage's weights does not hold for the next stage's."""
    core = getattr(model, "module", model)
    if getattr(core, "contact_fit", False):
        core.contact_line.copy_(torch.tensor([0.0, 1.0], device=core.contact_line.device))
