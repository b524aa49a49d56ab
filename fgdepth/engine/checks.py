"""Checking an experiment against the registries, before any work starts.

``fgdepth.config`` checks the schema (keys, types, ranges); this module checks the names it
holds against what the engine can build: the model and its options, losses, optimizers,
schedules, parameter groups, and stage sizes against the model's size multiple. The model is
not built: its class declares what is checked. Every error is one line (``ConfigError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgdepth.config import (
    Config,
    ConfigError,
    StageConfig,
    check_schema,
    load_config,
    scaled_stages,
    unknown_key_error,
)
from fgdepth.engine.stages import OPTIMIZERS, SCHEDULES
from fgdepth.losses import LOSSES
from fgdepth.models import MODELS, DepthMaskModel, model_class
from fgdepth.registry import Registry


def load_experiment(
    experiment: str | Path,
    profile: str | None = None,
    overrides: list[str] | tuple = (),
    extra: dict | None = None,
) -> Config:
    """An experiment read, merged, scaled and overridden (``fgdepth.config.load_config``),
    then checked against the registries: a config the engine can run; raises ConfigError."""
    config = load_config(experiment, profile, overrides, extra)
    check_names(config)
    return config


def check(config: Config) -> None:
    """The schema's checks and the registries': for a config built other than by loading
    (a tuning trial's, a resumed run's)."""
    check_schema(config)
    check_names(config)


def check_names(config: Config) -> None:
    """The names of ``config`` against the registries, and stage sizes against the model."""
    model = checked_model(config)
    _known("optimizer", OPTIMIZERS, config.optimizer.name)
    _known("schedule", SCHEDULES, config.schedule.name)
    for i, stage in enumerate(config.stages):
        _check_stage(config, model, f"stages.{i}", stage)
    for stage in scaled_stages(config):
        if stage.size % model.size_multiple:
            raise ConfigError(
                f"profile '{config.profile}' scales a stage to {stage.size} px, "
                f"not a multiple of {model.size_multiple}"
            )


def _known(kind: str, registry: Registry, name: str) -> None:
    if name not in registry:
        raise ConfigError(
            f"{kind}.name: unknown {kind} '{name}'; valid: {', '.join(registry.names())}"
        )


def checked_model(config: Config) -> type[DepthMaskModel]:
    """The configured model's class, its name and options checked (nothing is built)."""
    name, options = config.model.name, config.model.options
    _known("model", MODELS, name)
    cls = model_class(name)
    defaults = cls.option_defaults()
    for key, value in options.items():
        if key not in defaults:
            raise unknown_key_error(key, list(defaults), "model")
        _check_option(f"model.{key}", value, defaults[key])
    try:
        cls.check_options(**options)
    except (ValueError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"model: {name} cannot be built ({detail})") from None
    return cls


def _check_option(key: str, value: Any, default: Any) -> None:
    """A model option of the same kind as its default; counts (width, head, ...) >= 1."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{key}: {value!r} is not allowed (a whole number, 1 or more)")


def _check_stage(
    config: Config, model: type[DepthMaskModel], where: str, stage: StageConfig
) -> None:
    for head, terms in (stage.loss or config.loss).items():
        for name in terms:
            if name not in LOSSES:
                raise ConfigError(
                    f"{where}.loss.{head}: unknown loss '{name}'; valid: "
                    f"{', '.join(LOSSES.names())}"
                )
    for group in stage.freeze:
        if group not in model.group_names:
            raise ConfigError(
                f"{where}.freeze: unknown parameter group '{group}' of "
                f"{config.model.name}; valid: {', '.join(sorted(model.group_names))}"
            )
    if stage.size < 16 or stage.size % model.size_multiple:
        raise ConfigError(
            f"{where}.size: {config.model.name} takes sizes that are multiples "
            f"of {model.size_multiple} (>= 16), got {stage.size}"
        )
