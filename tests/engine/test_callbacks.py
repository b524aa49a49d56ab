"""The callback interface: every hook forwarded in order, and what the console says."""

import pytest
import torch
from torch import nn

from fgdepth.config import StageConfig, load_config
from fgdepth.engine.callbacks import (
    Callback,
    CallbackList,
    ConsoleCallback,
    EpochResult,
    FitResult,
    StageResult,
    data_lines,
    data_modes,
)
from fgdepth.models import build_model

HOOKS = ("on_fit_start", "on_stage_start", "on_epoch_end", "on_stage_end", "on_fit_end",
         "on_checkpoint")  # fmt: skip


class Log(Callback):
    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def on_stage_start(self, stage, config):
        self.seen.append((self.name, "on_stage_start", stage))

    def on_checkpoint(self, state):
        self.seen.append((self.name, "on_checkpoint", state["step"]))


class Stop(Exception):
    pass


def _epoch(**over) -> EpochResult:
    values = dict(
        stage=1, stage_name="s64", epoch=2, step=5, train={"loss": 0.123456},
        val={"mask_iou": 0.87654, "depth_rmse": 0.04321, "fg_distance_error": 0.02468},
        lr=0.001, seconds=12.4, samples_per_s=321.6,
    )  # fmt: skip
    return EpochResult(**(values | over))


def test_the_base_callback_accepts_every_hook_and_does_nothing():
    cb, stage = Callback(), StageConfig()
    assert cb.on_fit_start(None, nn.Linear(1, 1), {}) is None
    assert cb.on_stage_start(0, stage) is None and cb.on_epoch_end(_epoch(), None) is None
    assert cb.on_stage_end(StageResult(0, stage, {}, []), None) is None
    assert cb.on_fit_end(None) is None and cb.on_checkpoint({}) is None


def test_a_callback_list_forwards_every_hook_to_each_callback_in_order():
    seen = []
    both = CallbackList([Log("a", seen), Callback(), Log("b", seen)])
    both.on_stage_start(3, StageConfig())
    both.on_checkpoint({"step": 7})
    assert seen == [("a", "on_stage_start", 3), ("b", "on_stage_start", 3),
                    ("a", "on_checkpoint", 7), ("b", "on_checkpoint", 7)]  # fmt: skip


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_of_a_callback_list_reaches_its_callbacks(hook):
    calls = []
    a, b = Callback(), Callback()
    for name, cb in (("a", a), ("b", b)):
        setattr(cb, hook, lambda *args, name=name: calls.append((name, *args)))
    getattr(CallbackList([a, b]), hook)("x")
    assert calls == [("a", "x"), ("b", "x")]


def test_an_exception_in_a_callback_stops_the_ones_after_it():
    seen = []

    class Raises(Callback):
        def on_stage_start(self, stage, config):
            raise Stop("stopped")

    with pytest.raises(Stop, match="stopped"):
        CallbackList([Log("a", seen), Raises(), Log("b", seen)]).on_stage_start(0, StageConfig())
    assert seen == [("a", "on_stage_start", 0)]


def test_the_console_says_one_line_per_epoch_with_its_numbers():
    lines = []
    ConsoleCallback(lines.append).on_epoch_end(_epoch(), None)
    assert lines == [
        "  stage 1 s64 epoch 3: loss 0.1235  val mask_iou 0.8765 depth_rmse 0.0432 dist 0.0247  "
        "(322 samples/s, 12s)"
    ]


def test_the_console_says_one_line_per_stage_with_its_test_metrics():
    lines = []
    test = {"mask_iou": 0.9, "depth_rmse": 0.05, "fg_distance_error": 0.012345}
    ConsoleCallback(lines.append).on_stage_end(StageResult(2, StageConfig(), test, []), None)
    assert lines == ["  stage 2 test: mask_iou 0.9000 depth_rmse 0.0500 fg_distance_error 0.0123"]


def test_the_console_says_the_contact_line_under_the_test_line():
    test = {"mask_iou": 0.9, "depth_rmse": 0.05, "fg_distance_error": 0.012345}
    model = build_model("unet", width=8, contact=True, contact_fit=True)
    said = []
    for line in ([0.0, 1.0], [-0.05, 1.04]):
        model.contact_line.copy_(torch.tensor(line))
        lines = []
        ConsoleCallback(lines.append).on_stage_end(StageResult(2, StageConfig(), test, []), model)
        said.append(lines[1:])
    assert said == [
        ["  stage 2 contact readout: object depth = 0.0000 + 1.0000 x the depth read at its "
         "feet (too few objects on val to fit)"],
        ["  stage 2 contact readout: object depth = -0.0500 + 1.0400 x the depth read at its "
         "feet (fitted on val)"],
    ]  # fmt: skip


def _info(**over) -> dict:
    stages = [StageConfig(name="s32", size=32), StageConfig(name="", size=64)]
    data = [
        {"mode": "cache", "cache_bytes": 1_500_000, "size": 32, "input_size": 32,
         "clamped": False},
        {"mode": "stream", "cache_bytes": 0, "size": 64, "input_size": 48, "clamped": True},
    ]  # fmt: skip
    info = {"precision": "fp32", "device": "cpu", "splits": {"train": 20, "val": 4, "test": 6},
            "stages": stages, "data": data}  # fmt: skip
    return info | over


def test_the_console_opens_with_the_model_the_precision_the_splits_and_the_data():
    config = load_config("default", "smoke")
    model = nn.Linear(3, 2)  # 8 parameters
    lines = []
    ConsoleCallback(lines.append).on_fit_start(config, model, _info())
    assert lines[0] == (
        f"{config.name}: {config.model.name} (8 parameters), fp32 on cpu, "
        "splits {'train': 20, 'val': 4, 'test': 6}"
    )
    assert lines[1] == "  data: s32 32px cache 1.5 MB; 1 64px stream"
    assert lines[2].startswith("  data: inputs read at 48 px at most (for 64 px outputs")
    assert len(lines) == 3


def test_the_console_names_the_precisions_reason_the_ranks_and_a_resumed_run():
    config = load_config("default", "smoke")
    lines = []
    info = _info(precision="bf16", precision_reason="native bf16", ranks=2, resumed=True, data=[])
    ConsoleCallback(lines.append).on_fit_start(config, nn.Linear(1000, 1000), info)
    assert lines == [
        f"{config.name}: {config.model.name} (1,001,000 parameters), bf16 on cpu "
        "(native bf16), splits {'train': 20, 'val': 4, 'test': 6}, 2 ranks (DDP) (resumed)"
    ]


def test_data_modes_names_each_stage_its_size_and_mode():
    info = _info()
    assert data_modes(info["stages"], info["data"]) == "s32 32px cache 1.5 MB; 1 64px stream"
    with pytest.raises(ValueError):  # a plan per stage, no fewer
        data_modes(info["stages"], info["data"][:1])


def test_data_lines_say_nothing_without_data_and_the_clamp_once():
    info = _info()
    assert data_lines(info["stages"], []) == []
    both_clamped = [dict(d, clamped=True) for d in info["data"]]
    lines = data_lines(info["stages"], both_clamped)
    assert len(lines) == 2
    assert lines[1].startswith("data: inputs read at 32 px at most (for 32 px outputs and above)")


def test_the_results_default_to_no_epochs_no_early_stop_and_no_skipped_rows():
    stage = StageResult(0, StageConfig(), {"mask_iou": 1.0}, [])
    assert stage.epochs == []
    fit = FitResult(nn.Linear(1, 1), None, [stage], {"mask_iou": 1.0}, 1.0, 10.0)
    assert fit.stopped_early is None and fit.skipped_rows == []
