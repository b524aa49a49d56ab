"""A stage's set-up: frozen groups, the optimizer and the learning-rate schedule."""

import pytest
import torch
from torch import nn

from fgdepth.config import OptimizerConfig, ScheduleConfig, StageConfig, load_config
from fgdepth.engine.stages import (
    freeze_groups,
    make_optimizer,
    make_schedule,
    set_train_mode,
    stage_optimizer_config,
    stage_schedule_config,
    steps_per_epoch,
)
from fgdepth.models import build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("unet", width=4, head=4)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_freezing_stops_the_named_groups_and_only_them(model):
    frozen = freeze_groups(model, ["trunk", "depth"])
    assert frozen == [*model.group_modules("trunk"), *model.group_modules("depth")]
    still = _ids(model.group_parameters("trunk") + model.group_parameters("depth"))
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in still)
    assert all(p.requires_grad for p in model.group_parameters("mask"))


def test_freezing_again_starts_from_a_fully_trainable_model(model):
    freeze_groups(model, ["trunk"])
    assert freeze_groups(model, ["mask"]) == model.group_modules("mask")
    assert all(p.requires_grad for p in model.group_parameters("trunk"))
    assert freeze_groups(model, []) == []
    assert all(p.requires_grad for p in model.parameters())


def test_an_unknown_group_lists_the_valid_ones(model):
    with pytest.raises(KeyError, match="unknown parameter group 'head'; valid: .*mask"):
        freeze_groups(model, ["head"])


def test_frozen_modules_stay_in_eval_so_batchnorm_statistics_stay_put(model):
    frozen = freeze_groups(model, ["mask"])
    set_train_mode(model, frozen)
    assert model.training and model.encoder.training and not model.mask_head.training
    norms = [m for m in model.mask_head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    trunk_before = model.encoder[0][0][1].running_mean.clone()
    model(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))
    assert not torch.equal(trunk_before, model.encoder[0][0][1].running_mean)  # trains


@pytest.mark.parametrize(
    ("name", "kind"), [("adamw", torch.optim.AdamW), ("adam", torch.optim.Adam),
                       ("sgd", torch.optim.SGD)],
)  # fmt: skip
def test_the_optimizer_gets_only_trainable_parameters_and_its_settings(model, name, kind):
    freeze_groups(model, ["trunk"])
    opt = make_optimizer(model, OptimizerConfig(name=name, lr=0.02, weight_decay=0.5))
    assert type(opt) is kind
    (group,) = opt.param_groups
    assert _ids(group["params"]) == _ids(p for p in model.parameters() if p.requires_grad)
    assert _ids(group["params"]).isdisjoint(_ids(model.group_parameters("trunk")))
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.5


def test_an_unknown_optimizer_lists_the_valid_ones(model):
    with pytest.raises(KeyError) as caught:
        make_optimizer(model, OptimizerConfig(name="lion"))
    assert caught.value.args[0] == "unknown optimizer 'lion'; valid: adam, adamw, sgd"


def test_a_stage_overrides_the_experiments_optimizer_and_schedule_without_changing_them():
    config = load_config("default", "smoke")
    stage = StageConfig(optimizer={"lr": 0.5}, schedule={"name": "step", "gamma": 0.2})
    opt = stage_optimizer_config(config, stage)
    assert opt.lr == 0.5 and opt.name == config.optimizer.name
    assert opt.weight_decay == config.optimizer.weight_decay
    sched = stage_schedule_config(config, stage)
    assert (sched.name, sched.gamma, sched.step_size) == ("step", 0.2, config.schedule.step_size)
    assert config.optimizer.lr != 0.5 and config.schedule.name != "step"
    assert stage_optimizer_config(config, StageConfig()) == config.optimizer


def _lrs(model, cfg: ScheduleConfig, lr=0.1, steps=5, epochs=2) -> list[float]:
    """The learning rate of each batch of ``epochs`` epochs of ``steps`` batches."""
    opt = make_optimizer(model, OptimizerConfig(name="sgd", lr=lr))
    schedule = make_schedule(opt, cfg, lr, steps, epochs)
    seen = []
    for _ in range(epochs):
        for _ in range(steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.batch()
        schedule.epoch()
    return seen


def test_onecycle_warms_up_from_a_tenth_to_the_peak_and_ends_far_below(model):
    lrs = _lrs(model, ScheduleConfig(name="onecycle", warmup=0.3), lr=0.1, steps=5, epochs=2)
    assert lrs[0] == pytest.approx(0.01)  # div_factor 10
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1) and peak == 2  # after 30% of 10 batches, from 0
    assert lrs[:peak] == sorted(lrs[:peak]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)
    assert lrs[-1] < 0.01


def test_cosine_decays_every_batch_towards_zero(model):
    lrs = _lrs(model, ScheduleConfig(name="cosine"), lr=0.1, steps=5, epochs=2)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[5] == pytest.approx(0.05)  # half way


def test_step_multiplies_by_gamma_every_step_size_epochs(model):
    cfg = ScheduleConfig(name="step", step_size=1, gamma=0.5)
    lrs = _lrs(model, cfg, lr=0.1, steps=3, epochs=3)
    assert lrs == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 3)


def test_constant_keeps_the_rate_and_has_no_state(model):
    lrs = _lrs(model, ScheduleConfig(name="constant"), lr=0.1, steps=3, epochs=2)
    assert lrs == [0.1] * 6
    opt = make_optimizer(model, OptimizerConfig(lr=0.1))
    assert make_schedule(opt, ScheduleConfig(name="constant"), 0.1, 3, 2).state_dict() is None


@pytest.mark.parametrize("name", ["onecycle", "cosine", "step"])
def test_advance_puts_a_fresh_schedule_where_training_left_it(model, name):
    cfg = ScheduleConfig(name=name, step_size=1)
    trained = make_optimizer(model, OptimizerConfig(name="sgd", lr=0.1))
    schedule = make_schedule(trained, cfg, 0.1, 4, 3)
    for _ in range(4 + 2):  # one epoch of 4 batches, then 2 batches
        trained.step()
        schedule.batch()
        if _ == 3:
            schedule.epoch()
    fresh = make_optimizer(model, OptimizerConfig(name="sgd", lr=0.1))
    again = make_schedule(fresh, cfg, 0.1, 4, 3)
    again.advance(epochs=1, batches=2, steps_per_epoch=4)
    assert fresh.param_groups[0]["lr"] == pytest.approx(trained.param_groups[0]["lr"])
    assert again.state_dict()["last_epoch"] == schedule.state_dict()["last_epoch"]


@pytest.mark.parametrize(("samples", "batch", "steps"), [(64, 16, 4), (65, 16, 5), (3, 16, 1),
                                                         (0, 8, 1)])  # fmt: skip
def test_steps_per_epoch_rounds_up_and_is_at_least_one(samples, batch, steps):
    assert steps_per_epoch(samples, batch) == steps
