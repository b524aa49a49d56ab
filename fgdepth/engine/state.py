"""The resumable training state: what it holds, how it is taken and how it is read back.

A state is a plain dict of tensors and numbers (``torch.load(weights_only=True)`` reads it):
the model, optimizer and schedule, the random generators, and the ``Position`` — stage, epoch,
rows done in the epoch under way (rows, not batches, so that a run resumes with any number of
ranks), that epoch's rows and metric sums, and the finished stages' test metrics.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

STATE_FORMAT = "fgdepth-state-2"


@dataclass
class Position:
    """Where training stands: what a resumable state holds besides the weights."""

    stage: int = 0
    epoch: int = 0  # epochs done in the stage
    offset: int = 0  # rows done in the epoch under way (0: none)
    step: int = 0  # epochs done in the run: the metric step
    trained: int = 0
    train_seconds: float = 0.0
    elapsed: float = 0.0  # wall seconds before this session
    rows: np.ndarray | None = None  # the rows of the epoch under way
    acc: dict | None = None  # its metric sums so far (over all ranks)
    stage_tests: list = field(default_factory=list)  # test metrics of the finished stages
    samples: list | None = None  # each stage's samples as a time budget fitted them

    def within_stage(self, stage: int) -> bool:
        """Whether this position is inside ``stage`` (not at its very start)."""
        return self.stage == stage and (self.epoch > 0 or self.offset > 0)


@dataclass
class Generators:
    """The run's random streams: the epochs' rows (the same on every rank) and this rank's
    augmentation."""

    rows: np.random.Generator
    augment: torch.Generator

    def state(self) -> dict:
        return {
            "numpy": self.rows.bit_generator.state,
            "torch": self.augment.get_state(),
            "torch_global": torch.get_rng_state(),
            "python": random.getstate(),
        }

    def restore(self, state: dict) -> None:
        self.rows.bit_generator.state = state["numpy"]
        self.augment.set_state(state["torch"])
        torch.set_rng_state(state["torch_global"])
        random.setstate(state["python"])


def capture(
    pos: Position,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule,
    generators: Generators,
    world_size: int,
    elapsed: float,
) -> dict:
    """A resumable state at ``pos`` (its stage, epoch, offset, rows and sums as given)."""
    rows, acc = pos.rows, pos.acc
    return {
        "format": STATE_FORMAT, "world": world_size,
        "stage": pos.stage, "epoch": pos.epoch, "offset": pos.offset, "step": pos.step,
        "trained": pos.trained, "train_seconds": pos.train_seconds, "elapsed": elapsed,
        "rows": None if rows is None else torch.from_numpy(np.asarray(rows)),
        "acc": None if acc is None else {k: v.cpu() for k, v in acc.items()},
        "stage_tests": list(pos.stage_tests), "samples": pos.samples,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "rng": generators.state(),
    }  # fmt: skip


def position_of(state: dict) -> Position:
    """The position recorded in a resumable state."""
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"not a training state of this fgdepth version ({STATE_FORMAT}): start a new run"
        )
    rows = state.get("rows")
    return Position(
        state["stage"], state["epoch"], state["offset"], state["step"], state["trained"],
        state["train_seconds"], state["elapsed"], None if rows is None else rows.numpy(),
        state.get("acc"), list(state["stage_tests"]), state.get("samples"),
    )  # fmt: skip
