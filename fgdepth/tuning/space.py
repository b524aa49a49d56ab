"""The search space (pure: a trial's values -> a config), the samplers and pruners by name, and
the pruning callback with its one exception."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import optuna

from fgdepth.config import Config, ConfigError, ObjectiveConfig, StageConfig, build
from fgdepth.engine.callbacks import Callback, EpochResult, ProgressResult
from fgdepth.engine.checks import check
from fgdepth.engine.stages import stage_optimizer_config
from fgdepth.engine.stopping import Interrupted
from fgdepth.metrics import LOWER_IS_BETTER, SCORE_TERMS
from fgdepth.metrics import score as weighted_score
from fgdepth.registry import Registry

PRUNERS = Registry("pruner")
SAMPLERS = Registry("sampler")


@PRUNERS.register("median")
def _median(cfg):
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_steps
    )


@PRUNERS.register("hyperband")
def _hyperband(cfg):
    return optuna.pruners.HyperbandPruner(reduction_factor=cfg.reduction_factor)


@PRUNERS.register("none")
def _no_pruning(cfg):
    return optuna.pruners.NopPruner()


@SAMPLERS.register("tpe")
def _tpe(seed):
    return optuna.samplers.TPESampler(seed=seed)


@SAMPLERS.register("random")
def _random(seed):
    return optuna.samplers.RandomSampler(seed=seed)


def schedule_label(schedule: list[dict]) -> str:
    """A schedule as one categorical choice: '64px/180000x3 > 96px/60000x2'."""
    parts = []
    for stage in schedule:
        label = f"{stage.get('size', '?')}px/{stage.get('samples', '?')}x{stage.get('epochs', '?')}"
        extra = sorted(set(stage) - {"size", "samples", "epochs", "name"})
        parts.append(label + (f"({','.join(extra)})" if extra else ""))
    return " > ".join(parts)


def _overlay(base: StageConfig, over: dict, where: str) -> StageConfig:
    merged = {**dataclasses.asdict(base), **over}
    if "name" not in over and "size" in over and base.name == f"s{base.size}":
        merged["name"] = f"s{over['size']}"
    return build(StageConfig, merged, where)


def _scheduled_stages(config: Config, label: str) -> list[StageConfig]:
    labels = [schedule_label(s) for s in config.tune.schedules]
    if label not in labels:
        raise ConfigError(f"schedule '{label}' is not in tune.schedules")
    k = labels.index(label)
    return [
        _overlay(config.stages[min(i, len(config.stages) - 1)], over, f"tune.schedules.{k}.{i}")
        for i, over in enumerate(config.tune.schedules[k])
    ]


def _trained(config: Config, size: int, base: StageConfig) -> bool:
    """Whether a stage of ``size`` is trained at the profile (not one it leaves out)."""
    cap = config.scale.max_size
    return not (cap and size > cap and base.when_capped == "skip")


def _recipe_stages(config: Config) -> list[StageConfig]:
    return [s for s in config.stages if _trained(config, s.size, s)] or list(config.stages)


def recipe_compute(config: Config) -> float:
    """What the recipe's stages that the profile trains cost, in samples x epochs x pixels
    (at the original scale)."""
    return float(sum(s.samples * s.epochs * s.size**2 for s in _recipe_stages(config)))


def _nearest_stage(config: Config, size: int) -> StageConfig:
    """The recipe's stage closest in size (the larger one of two as close): the one whose
    other keys (learning rate, when_capped) a drawn stage of ``size`` takes."""
    return min(config.stages, key=lambda s: (abs(s.size - size), -s.size))


def share_sizes(config: Config) -> list[int]:
    """The sizes of ``tune.time_shares`` up to the profile's ``max_size``, smallest first: a
    share is drawn for each (a larger one would train at another size, or not at all)."""
    sizes, cap = sorted(config.tune.time_shares.sizes), config.scale.max_size
    return [s for s in sizes if not cap or s <= cap] or sizes[:1]


def time_shares(config: Config, params: dict[str, Any]) -> dict[int, float]:
    """A trial's ``share_SIZE`` values as fractions of the time, of the sizes it keeps (those
    given at least ``min_share``; the largest share when none is), smallest size first."""
    raw = {size: max(0.0, float(params.get(f"share_{size}", 0.0))) for size in share_sizes(config)}
    total = sum(raw.values())
    shares = {size: v / total if total else 1 / len(raw) for size, v in raw.items()}
    kept = [size for size in shares if shares[size] >= config.tune.time_shares.min_share]
    kept = kept or [max(shares, key=shares.get)]
    rest = sum(shares[size] for size in kept)
    return {size: shares[size] / rest for size in kept}


def _shared_stages(config: Config, params: dict[str, Any]) -> list[StageConfig]:
    """The stages a trial's time shares give: each size's share of the recipe's compute."""
    compute = recipe_compute(config)
    stages = []
    for size, share in time_shares(config, params).items():
        base = _nearest_stage(config, size)
        epochs = base.epochs if base.size == size else config.tune.time_shares.epochs
        samples = max(1, round(share * compute / (epochs * size**2)))
        over = {"size": size, "samples": samples, "epochs": epochs}
        stages.append(_overlay(base, over, f"tune.time_shares ({size} px)"))
    return stages


def apply_params(config: Config, params: dict[str, Any]) -> Config:
    """``config`` with one trial's values put in, checked; raises ConfigError. New stage
    objects throughout: the study's own config is never changed."""
    stages = [dataclasses.replace(s) for s in config.stages]
    if "schedule" in params:
        stages = _scheduled_stages(config, params["schedule"])
    elif config.tune.time_shares and any(name.startswith("share_") for name in params):
        stages = _shared_stages(config, params)
    for i, stage in enumerate(stages):
        if f"lr_stage{i}" in params:
            stages[i] = dataclasses.replace(
                stage, optimizer={**stage.optimizer, "lr": float(params[f"lr_stage{i}"])}
            )
    loss_weights = dict(config.loss_weights)
    for head in config.tune.loss_weights:
        if f"loss_weight_{head}" in params:
            loss_weights[head] = float(params[f"loss_weight_{head}"])
    out = dataclasses.replace(
        config,
        stages=stages,
        loss_weights=loss_weights,
        batch_size=int(params.get("batch_size", config.batch_size)),
    )
    check(out)
    return out


def trial_config(config: Config) -> Config:
    """What a trial of ``config`` (its values put in) trains: with a training time, one
    objective and a pruner, validated at ``tune.pruner.reports`` equal shares of that time
    as well (``eval.val_reports``), so that the pruner judges every schedule at the same
    minutes and within long stages. The recipe a study writes and compares stays without."""
    tune = config.tune
    if (
        not config.train_minutes
        or tune.objective.multi
        or tune.pruner.name == "none"
        or tune.pruner.reports < 2
    ):
        return config
    evaluation = dataclasses.replace(config.eval, val_reports=tune.pruner.reports)
    return dataclasses.replace(config, eval=evaluation)


def tuned_keys(params: dict[str, Any]) -> set[str]:
    """The config keys that a trial's values set in ``apply_params``: ``stages`` (a schedule,
    time shares, a stage's learning rate), ``loss_weights``, ``batch_size``."""
    keys = set()
    for name in params:
        if name == "schedule" or name.startswith(("lr_stage", "share_")):
            keys.add("stages")
        elif name.startswith("loss_weight_"):
            keys.add("loss_weights")
        elif name == "batch_size":
            keys.add("batch_size")
    return keys


def suggest(trial: optuna.Trial, config: Config) -> dict[str, Any]:
    """Draw one point of the experiment's search space."""
    tune = config.tune
    n_stages = len(config.stages)
    if tune.schedules:
        labels = [schedule_label(s) for s in tune.schedules]
        label = trial.suggest_categorical("schedule", labels)
        n_stages = len(tune.schedules[labels.index(label)])
    elif tune.time_shares:
        for size in share_sizes(config):
            trial.suggest_float(f"share_{size}", 0.0, 1.0)
        n_stages = len(time_shares(config, trial.params))
    if tune.lr:
        for i in range(n_stages):
            trial.suggest_float(f"lr_stage{i}", tune.lr.low, tune.lr.high, log=tune.lr.log)
    for head, r in tune.loss_weights.items():
        trial.suggest_float(f"loss_weight_{head}", r.low, r.high, log=r.log)
    if tune.batch_size:
        trial.suggest_categorical("batch_size", tune.batch_size)
    return dict(trial.params)


def recipe_params(config: Config) -> dict[str, Any]:
    """The experiment's own recipe as a point of its search space, as far as it is one: its
    schedule (where ``tune.schedules`` lists it), each stage's peak learning rate, its loss
    weights and batch size, each where the space holds it. A new study tries it first, so
    its best is never worse on validation than the recipe it tunes."""
    tune, params = config.tune, {}
    stages = [{"size": s.size, "samples": s.samples, "epochs": s.epochs} for s in config.stages]
    if schedule_label(stages) in [schedule_label(s) for s in tune.schedules]:
        params["schedule"] = schedule_label(stages)
    elif tune.schedules:
        return {}  # another number of stages: its learning rates would not line up
    elif tune.time_shares:
        shares = _recipe_shares(config)
        if shares is None:
            return {}
        params.update(shares)
    if tune.lr:
        for i, stage in enumerate(config.stages):
            lr = float(stage_optimizer_config(config, stage).lr)
            if tune.lr.low <= lr <= tune.lr.high:
                params[f"lr_stage{i}"] = lr
    for head, r in tune.loss_weights.items():
        if r.low <= config.loss_weights.get(head, 1.0) <= r.high:
            params[f"loss_weight_{head}"] = float(config.loss_weights.get(head, 1.0))
    if config.batch_size in tune.batch_size:
        params["batch_size"] = config.batch_size
    return params


def _recipe_shares(config: Config) -> dict[str, float] | None:
    """The recipe as time shares: each stage's part of its compute, where the stages that
    the profile trains have distinct, rising sizes, each drawn and each given ``min_share``."""
    stages, sizes = _recipe_stages(config), share_sizes(config)
    own = [s.size for s in stages]
    if own != sorted(set(own)) or not set(own) <= set(sizes):
        return None
    compute = recipe_compute(config)
    parts = {s.size: s.samples * s.epochs * s.size**2 / compute for s in stages}
    if min(parts.values()) < config.tune.time_shares.min_share:
        return None
    return {f"share_{size}": float(parts.get(size, 0.0)) for size in sizes}


def _check_shares(config: Config) -> None:
    space = config.tune.time_shares
    if space is None:
        return
    if config.tune.schedules:
        raise ConfigError("tune: time_shares and schedules are both set; give one of them")
    if not space.sizes or len(set(space.sizes)) != len(space.sizes):
        raise ConfigError(f"tune.time_shares.sizes: need distinct sizes, got {space.sizes}")
    if not 0 <= space.min_share < 1:
        raise ConfigError(f"tune.time_shares.min_share: {space.min_share} is not in [0, 1)")
    if space.epochs < 1:
        raise ConfigError(f"tune.time_shares.epochs: must be at least 1, got {space.epochs}")


def _check_ranges(config: Config) -> None:
    tune = config.tune
    if not (tune.lr or tune.schedules or tune.time_shares or tune.loss_weights
            or tune.batch_size):  # fmt: skip
        raise ConfigError(
            f"tune: experiment '{config.name}' has no search space (set tune.lr, "
            "tune.schedules, tune.time_shares, tune.loss_weights or tune.batch_size)"
        )
    _check_shares(config)
    if tune.trials < 1:
        raise ConfigError(f"tune.trials: must be at least 1, got {tune.trials}")
    if tune.confirm < 0:
        raise ConfigError(f"tune.confirm: must be 0 or more, got {tune.confirm}")
    if tune.pruner.reports < 1:
        raise ConfigError(f"tune.pruner.reports: must be at least 1, got {tune.pruner.reports}")
    if tune.minutes is not None and not (math.isfinite(tune.minutes) and tune.minutes > 0):
        raise ConfigError(f"tune.minutes: {tune.minutes} is not allowed (a number above 0)")
    if not any(weights(tune.objective).values()):
        raise ConfigError("tune.objective: every weight is 0, nothing to optimise")
    ranges = [("lr", tune.lr), *((f"loss_weights.{h}", r) for h, r in tune.loss_weights.items())]
    for key, r in ranges:
        if r is not None and not (0 < r.low < r.high if r.log else r.low < r.high):
            raise ConfigError(f"tune.{key}: need 0 < low < high, got {r.low}..{r.high}")
    for name, registry, value in (
        ("pruner.name", PRUNERS, tune.pruner.name),
        ("sampler", SAMPLERS, tune.sampler),
    ):
        if value not in registry:
            valid = ", ".join(registry.names())
            raise ConfigError(f"tune.{name}: unknown '{value}'; valid: {valid}")


def check_space(config: Config) -> None:
    """Every choice of the search space must make a valid config: fail before any work."""
    _check_ranges(config)
    tune = config.tune
    points: list[dict[str, Any]] = [{"schedule": schedule_label(s)} for s in tune.schedules]
    if tune.time_shares:  # each size alone, and all of them
        sizes = share_sizes(config)
        points = [{f"share_{s}": float(s == size) for s in sizes} for size in sizes]
        points.append({f"share_{s}": 1.0 for s in sizes})
    for params in points or [{}]:
        if tune.batch_size:
            params["batch_size"] = tune.batch_size[0]
        apply_params(config, params)


def weights(objective: ObjectiveConfig) -> dict[str, float]:
    """Each headline metric's weight, as the score uses it (subtracted where lower is better)."""
    values = (objective.mask_iou_weight, objective.depth_rmse_weight, objective.fg_distance_weight)
    return dict(zip(SCORE_TERMS, values, strict=True))


def score(metrics: dict[str, float], objective: ObjectiveConfig) -> float:
    """The single objective: higher is better."""
    return weighted_score(metrics, *weights(objective).values())


def formula(objective: ObjectiveConfig) -> str:
    """The score as written: ``1 * mask_iou - 1 * depth_rmse - 1 * fg_distance_error``."""
    text = ""
    for name, weight in weights(objective).items():
        if not weight:
            continue  # not read by the score either
        signed = -weight if name in LOWER_IS_BETTER else weight
        sign = "-" if signed < 0 else "+"
        text += f" {sign} {abs(signed):g} * {name}" if text else f"{signed:g} * {name}"
    return text or "0"


def objectives(objective: ObjectiveConfig) -> dict[str, str]:
    """The study's objectives, name -> direction: the score (named by its formula), or with
    ``multi`` each metric of non-zero weight on its own."""
    if not objective.multi:
        return {formula(objective): "maximize"}
    return {
        name: "minimize" if name in LOWER_IS_BETTER else "maximize"
        for name, weight in weights(objective).items()
        if weight
    }


def objective_values(metrics: dict[str, float], objective: ObjectiveConfig):
    """What a trial returns to Optuna: the score, or with ``multi`` a value per objective."""
    if not objective.multi:
        return score(metrics, objective)
    return tuple(float(metrics[name]) for name in objectives(objective))


def objective_label(objective: ObjectiveConfig) -> str:
    """The objective in one line, for the study's tracked run."""
    if not objective.multi:
        return f"{formula(objective)} (validation)"
    ups = [f"{n} {'down' if d == 'minimize' else 'up'}" for n, d in objectives(objective).items()]
    return f"{', '.join(ups)} (validation; best of the Pareto front by {formula(objective)})"


class TrialPruned(optuna.TrialPruned, Interrupted):
    """The pruner stopped the trial: to Optuna a pruned trial, to the engine and the run a
    stop (the run ends KILLED, with this message in its ``fgdepth.stopped`` tag)."""

    def __init__(self, message: str):
        Exception.__init__(self, message)
        self.reason = "pruned"


class PruningCallback(Callback):
    """Reports the validation score to the trial: at each share of its training time when the
    trial is validated within training (``eval.val_reports``: steps 1, 2, ..., the same
    shares of the same minutes for every schedule), else each epoch (step: the epoch's number
    in the run, from 0).
    Stops the trial when the pruner says so, or when the study's time budget (``deadline``,
    as ``time.time()``) is spent and a trial has completed (before that, the trial under way
    is the study's only chance of a result)."""

    def __init__(
        self, trial: optuna.Trial, objective: ObjectiveConfig, deadline=None, by_share=False
    ):
        self.trial = trial
        self.objective = objective
        self.deadline = deadline
        self.by_share = by_share

    def on_progress(self, result: ProgressResult, model) -> None:
        if self.by_share:
            self._judge(result.val, result.share, f"at {result.share}/{result.of} of its time")

    def on_epoch_end(self, result: EpochResult, model) -> None:
        self._judge(result.val, None if self.by_share else result.step, f"at epoch {result.step}")

    def _judge(self, val: dict, step: int | None, when: str) -> None:
        """``step``: report the score as that step and ask the pruner; None: the budget only."""
        if self.objective.multi:
            return  # Optuna prunes single-objective studies only
        value = score(val, self.objective)
        if step is not None:
            self.trial.report(value, step)
            if self.trial.should_prune():
                raise TrialPruned(f"pruned {when}: validation score {value:.4f}")
        if self.deadline is not None and time.time() >= self.deadline and self._one_completed():
            raise TrialPruned(
                f"pruned {when}: the study's time budget is spent (validation score {value:.4f})"
            )

    def _one_completed(self) -> bool:
        done = (optuna.trial.TrialState.COMPLETE,)
        return bool(self.trial.study.get_trials(deepcopy=False, states=done))
