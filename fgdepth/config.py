"""Experiment configuration: YAML -> typed dataclasses, checked strictly.

An experiment file may ``inherit`` another (by name: from the same folder, else a shipped
experiment; or by path) and lists only what
differs; lists (such as ``stages``) are replaced whole, mappings are merged (except ``model``
when it names a model: its options are the new model's own). A *profile*
(``smoke``, ``cpu``, ``full``; see ``experiments/profiles.yaml``) then scales the experiment,
and ``--set key.path=value`` overrides single values (``stages.1.lr=0.01``). Unknown keys, wrong
types and values out of range fail with one line before any work starts.

This module is the schema only: it imports no other part of fgdepth but its errors
(``fgdepth.errors``; ``ConfigError`` is one). Checking names against
the registries (models, losses, optimizers, schedules, parameter groups, size multiples) is
``fgdepth.engine.checks``, whose ``load_experiment`` is what a run loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fgdepth.errors import ConfigError

# shipped inside the package; a checkout also links it as ./experiments
EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
CACHE_POLICIES = ("auto", "always", "never")


@dataclass
class ModelConfig:
    name: str = "unet"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 0.004
    weight_decay: float = 0.0001
    momentum: float = 0.9


@dataclass
class ScheduleConfig:
    name: str = "onecycle"  # onecycle | cosine | step | constant
    step_size: int = 2  # epochs, for "step"
    gamma: float = 0.1  # for "step"
    warmup: float = 0.15  # fraction of the stage, for "onecycle"


WHEN_CAPPED = ("shrink", "skip")


@dataclass
class StageConfig:
    name: str = ""
    size: int = 64
    samples: int = 1000  # training samples per epoch
    epochs: int = 1
    batch_size: int | None = None  # default: the experiment's
    loss: dict[str, dict[str, float]] | None = None  # default: the experiment's
    loss_weights: dict[str, float] | None = None
    freeze: list[str] = field(default_factory=list)
    optimizer: dict[str, Any] = field(default_factory=dict)  # merged over the experiment's
    schedule: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a checkpoint file or MLflow model URI to start from
    # a profile's max_size below this stage's size: train it at max_size ("shrink"), or leave
    # it out ("skip": a fine-tuning stage that only means something at its own size)
    when_capped: str = "shrink"


SAMPLES_PER_BACKGROUND = 20  # the built-in data's composites per background, by default


@dataclass
class SynthConfig:
    """The built-in dataset (``fgdepth synth`` and ``data.path: null``)."""

    n: int = 400000
    size: int = 192
    seed: int = 0
    backgrounds: int | None = None  # None: one per SAMPLES_PER_BACKGROUND samples, 10 or more

    @property
    def n_backgrounds(self) -> int:
        if self.backgrounds:
            return min(self.backgrounds, self.n)
        return min(self.n, max(10, math.ceil(self.n / SAMPLES_PER_BACKGROUND)))


@dataclass
class DataConfig:
    path: str | None = None  # None: the built-in dataset
    synth: SynthConfig = field(default_factory=SynthConfig)
    # fractions of all rows (train gets the rest; val is carved from the train part), split
    # by background so that no background is in two splits
    test: float = 0.3
    val: float = 0.1
    split_seed: int = 0
    skip_bad: bool = False
    # processes that decode (0: the training process itself); None: every core for a cache
    # build or the built-in data, and for a stream the cores of this rank less one
    workers: int | None = None
    val_samples: int = 1000  # validation rows evaluated each epoch (the first ones, fixed)
    # where each stage's data comes from: its decode cache (auto: when it fits the budget and
    # the disk; always; never) or a stream decoded as training goes (docs/datasets.md)
    cache: str = "auto"
    cache_budget_gb: float | None = None  # auto: at most this much cache (None: the free disk)


@dataclass(frozen=True)
class AugmentSpec:
    """Paired augmentation of training batches (see ``fgdepth.data.augment``); by default
    flips only, as the recommended recipe (``default.yaml``) says."""

    flip: float = 0.5  # probability of a horizontal flip
    zoom: float = 0.0  # crop up to this much in (scale 1 .. 1 + zoom), then resize back
    jitter: float = 0.0  # brightness / contrast / saturation strength
    rgb_shift: float = 0.0  # per-channel offset, independently for fg_bg and bg
    noise: float = 0.0  # std of Gaussian noise on the inputs
    cutout: float = 0.0  # probability of a cutout rectangle on fg_bg
    cutout_size: float = 0.25  # its side as a fraction of the image side

    @property
    def enabled(self) -> bool:
        return any((self.flip, self.zoom, self.jitter, self.rgb_shift, self.noise, self.cutout))


@dataclass
class EvalConfig:
    images: int = 6  # test samples drawn in the image grid
    # rows per batch: on 2 CPU cores 16 rows predict 15-30 % more rows per second than 64
    # (96 px): a batch's activations stay in the caches
    batch_size: int = 16
    max_samples: int | None = None  # cap on test rows (None: the whole split)
    # the test split after every stage (each stage's result logged), or after the last only
    stage_tests: bool = True
    # under a training time (``train_minutes``): the validation split is also scored when each
    # of this many equal shares of that time is spent (the last share ends with the last
    # epoch), for a pruner to judge a trial within its stages; 0: after each epoch only
    val_reports: int = 0


@dataclass
class ScaleConfig:
    """How a profile shrinks an experiment written at the original scale."""

    samples: float = 1.0  # multiply each stage's samples by this
    max_size: int | None = None  # cap image sizes
    max_epochs: int | None = None
    min_samples: int = 1


@dataclass
class RangeConfig:
    """A number searched between ``low`` and ``high`` (on a log scale by default)."""

    low: float
    high: float
    log: bool = True


@dataclass
class ObjectiveConfig:
    """What a tuning trial maximises, from the validation split's metrics of its last epoch:
    ``mask_iou_weight * mask_iou - depth_rmse_weight * depth_rmse - fg_distance_weight *
    fg_distance_error``; with ``multi``, each metric of non-zero weight is its own objective
    (mask IoU up, depth RMSE and distance down) and the Pareto front is reported."""

    mask_iou_weight: float = 1.0
    depth_rmse_weight: float = 1.0
    fg_distance_weight: float = 1.0
    multi: bool = False


@dataclass
class PrunerConfig:
    name: str = "median"  # median | hyperband | none
    startup_trials: int = 3  # median: trials finished before any is pruned
    warmup_steps: int = 3  # median: no pruning at steps below this (step k: the k-th share)
    # validations per trial at equal shares of its training time (the pruner's steps: the
    # same minutes for every schedule; 1: after each epoch instead)
    reports: int = 10
    reduction_factor: int = 3  # hyperband


@dataclass
class TimeSharesConfig:
    """A resize schedule drawn per trial: a share of the training time for each size (a
    parameter ``share_SIZE`` between 0 and 1 each, then taken as fractions of their sum). The
    sizes are trained smallest first; one given less than ``min_share`` of the time is left
    out. A stage's samples are its share of the recipe's compute (samples x epochs x size^2
    summed over its stages) at its size; under a training time they are shares of that time."""

    sizes: list[int] = field(default_factory=list)
    min_share: float = 0.1
    epochs: int = 2  # a size the recipe has no stage of: epochs per stage (the pruner's steps)


@dataclass
class TuneConfig:
    """The search space of ``fgdepth tune`` and how trials are judged."""

    trials: int = 20
    # a time budget in minutes: trials start until it is spent and the one under way ends at
    # it (pruned, once a trial has completed); ``trials`` is then no limit
    minutes: float | None = None
    lr: RangeConfig | None = None  # the peak learning rate of each stage (one per stage)
    # resize schedules to choose from: each a list of stages ({size, samples, epochs}, or any
    # stage key) laid over the experiment's stages (the last one repeats when a schedule is
    # longer); written at the original scale, like the experiment, and scaled by the profile
    schedules: list[list[dict[str, Any]]] = field(default_factory=list)
    time_shares: TimeSharesConfig | None = None  # or: the sizes and their shares of the time
    loss_weights: dict[str, RangeConfig] = field(default_factory=dict)  # per head
    batch_size: list[int] = field(default_factory=list)  # choices
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    sampler: str = "tpe"  # tpe | random
    # with a time budget: its last part trains this many leading trials and the recipe again,
    # with another seed, and the best is the best mean of two runs (fgdepth.tuning.confirm);
    # none where those runs would take over a third of the budget, or with several objectives
    confirm: int = 0


@dataclass
class Config:
    """An experiment. The recommended recipe's values are written in ``default.yaml``; a
    default here that the file also sets is the same value, or a neutral one that the file
    replaces (a placeholder stage, no model options, no search space): see
    ``tests/test_config.py``."""

    name: str = "experiment"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "mask": {"bce": 1.0, "dice": 1.0},
            "depth": {"ssim": 1.0, "l1": 1.0},
        }
    )
    loss_weights: dict[str, float] = field(default_factory=lambda: {"mask": 2.0, "depth": 1.0})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 16
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    eval: EvalConfig = field(default_factory=EvalConfig)
    precision: str = "auto"
    channels_last: bool = True  # train in the channels-last layout (faster convolutions)
    seed: int = 0
    deterministic: bool = False
    max_minutes: float | None = None
    # minutes of training steps (validation, tests and pictures aside): the stages' samples
    # fitted to them on this machine, and training ends at them (``engine.budget``)
    train_minutes: float | None = None
    checkpoint_minutes: float = 10.0  # a resumable state also every this often within an epoch
    # the profile applied (the commands resolve ``auto`` first: ``fgdepth.app.profile``);
    # without one, the experiment as written, which is the `full` profile's scale
    profile: str = "full"
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)  # the search space of `fgdepth tune`

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --- merging and overrides -----------------------------------------------------------------


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` wins; mappings merge recursively, everything else (lists too) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file (YAML)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as a config file ({exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping at the top")
    return data


def resolve_path(name_or_path: str | Path) -> Path:
    """An experiment name (``bce_ssim``) or a YAML path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    names = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem != "profiles")
    raise ConfigError(f"unknown experiment '{name_or_path}'; valid: {', '.join(names)}")


def load_raw(path: Path, seen: tuple = ()) -> dict:
    """A YAML file with its ``inherit`` chain merged in."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: inherits itself")
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():  # one parent: a chain, not a list
        raise ConfigError(
            f"{path}: inherit: expected one experiment (a name or a YAML path), got {parent!r}"
        )
    parent_path = path.parent / (parent if str(parent).endswith(".yaml") else f"{parent}.yaml")
    if not parent_path.exists():  # a user's file may inherit a shipped experiment by name
        parent_path = resolve_path(parent)
    base = load_raw(parent_path, seen + (path,))
    if isinstance(data.get("model"), dict) and "name" in data["model"]:
        base.pop("model", None)  # another model: the parent's model options do not apply
    return deep_merge(base, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    node: Any = raw
    for i, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = _list_item(node, key, keys[: i + 1])
        else:
            node = node.setdefault(key, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"--set {'.'.join(keys)}: '{key}' is not a mapping")
    last = keys[-1]
    if isinstance(node, list):
        index = _index(node, last, keys)
        node[index] = value
    else:
        node[last] = value


def _index(items: list, key: str, keys: list[str]) -> int:
    try:
        index = int(key)
        items[index]  # noqa: B018
        return index
    except (ValueError, IndexError):
        raise ConfigError(
            f"--set {'.'.join(keys)}: '{key}' is not an index of a list of {len(items)}"
        ) from None


def _list_item(items: list, key: str, keys: list[str]):
    return items[_index(items, key, keys)]


# --- typed construction --------------------------------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(sorted(valid))}"
    return ConfigError(f"{where}{'.' if where else ''}{key}: unknown key{hint}")


def build(cls, data: dict, where: str = ""):
    """A ``cls`` instance from ``data``, refusing unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise unknown_key_error(key, names, where)
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _normalise(raw: dict) -> dict:
    """Shorthands: ``loss: {mask: bce}`` -> ``{mask: {bce: 1.0}}``; extra model keys -> options."""
    raw = dict(raw)

    def loss_map(spec, where):
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping of head -> loss")
        out = {}
        for head, terms in spec.items():
            out[head] = {terms: 1.0} if isinstance(terms, str) else terms
        return out

    if "loss" in raw:
        raw["loss"] = loss_map(raw["loss"], "loss")
    if isinstance(raw.get("stages"), list):
        stages = []
        for i, stage in enumerate(raw["stages"]):
            if isinstance(stage, dict) and "loss" in stage:
                stage = {**stage, "loss": loss_map(stage["loss"], f"stages.{i}.loss")}
            stages.append(stage)
        raw["stages"] = stages
    if isinstance(raw.get("model"), dict):
        model = dict(raw["model"])
        options = dict(model.pop("options", {}) or {})
        name = model.pop("name", "unet")
        options.update(model)
        raw["model"] = {"name": name, "options": options}
    return raw


def load_profiles(path: Path | None = None) -> dict:
    return _read_yaml(path or EXPERIMENTS_DIR / "profiles.yaml")


def load_config(
    experiment: str | Path,
    profile: str | None = None,
    overrides: list[str] | tuple = (),
    extra: dict | None = None,
) -> Config:
    """Read, merge, scale, override and check an experiment against the schema; raises
    ConfigError. A run loads with ``fgdepth.engine.checks.load_experiment``, which checks
    the names against the registries too."""
    raw = load_raw(resolve_path(experiment))
    if profile:
        profiles = load_profiles()
        if profile not in profiles:
            raise ConfigError(f"unknown profile '{profile}'; valid: {', '.join(profiles)}")
        raw = deep_merge(raw, profiles[profile] or {})
        raw["profile"] = profile
    raw = deep_merge(raw, extra or {})
    for text in overrides:
        apply_override(raw, *parse_override(text))
    config = build(Config, _normalise(raw))
    check_schema(config)
    return config


def scaled_stages(config: Config) -> list[StageConfig]:
    """The stages after the profile's ``scale``: fewer samples, smaller sizes, fewer epochs;
    a stage above ``max_size`` is trained at it, or left out if it says ``when_capped: skip``."""
    out = []
    s = config.scale
    for stage in config.stages:
        if s.max_size and stage.size > s.max_size and stage.when_capped == "skip":
            continue
        size = min(stage.size, s.max_size) if s.max_size else stage.size
        epochs = min(stage.epochs, s.max_epochs) if s.max_epochs else stage.epochs
        samples = max(s.min_samples, round(stage.samples * s.samples))
        out.append(dataclasses.replace(stage, size=size, epochs=epochs, samples=samples))
    return out


# --- checks of the schema (the registries' names are checked in fgdepth.engine.checks) ------

HEADS = ("depth", "mask")


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(valid)}")


def _check_stage(config: Config, where: str, stage: StageConfig) -> None:
    for head in stage.loss or config.loss:
        if head not in HEADS:
            raise ConfigError(f"{where}.loss.{head}: unknown head; valid: {', '.join(HEADS)}")
    if stage.epochs < 1:
        raise ConfigError(f"{where}.epochs: must be at least 1, got {stage.epochs}")
    _one_of(f"{where}.when_capped", stage.when_capped, WHEN_CAPPED)
    if stage.samples < 1:
        raise ConfigError(f"{where}.samples: must be at least 1, got {stage.samples}")
    for key, values, cls in (
        ("optimizer", stage.optimizer, OptimizerConfig),
        ("schedule", stage.schedule, ScheduleConfig),
    ):
        valid = [f.name for f in dataclasses.fields(cls)]
        for name in values:
            if name not in valid:
                raise unknown_key_error(name, valid, f"{where}.{key}")


def check_schema(config: Config) -> None:
    """Everything that can be checked without the registries: value ranges, choices among
    fixed words, stage keys, and that the profile leaves a stage."""
    check_values(config)
    _one_of("precision", config.precision, PRECISIONS)
    if not config.stages:
        raise ConfigError("stages: an experiment needs at least one stage")
    _one_of("data.cache", config.data.cache, CACHE_POLICIES)
    budget = config.data.cache_budget_gb
    if budget is not None and not budget >= 0:
        raise ConfigError(f"data.cache_budget_gb: must be 0 or more, got {budget}")
    for i, stage in enumerate(config.stages):
        _check_stage(config, f"stages.{i}", stage)
    if not scaled_stages(config):
        raise ConfigError(
            f"profile '{config.profile}' leaves no stage: every stage is above its max_size "
            "and says when_capped: skip"
        )


# --- value ranges ----------------------------------------------------------------------------

SEED_MAX = 2**32 - 1  # numpy's generators take seeds in [0, 2^32)


def _at_least(key: str, value, low: int, what: str = "a whole number") -> None:
    if value < low:
        raise ConfigError(f"{key}: {value!r} is not allowed ({what}, {low} or more)")


def _positive(key: str, value: float, zero: bool = False) -> None:
    """A finite number above 0 (or at 0 with ``zero``)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        allowed = "a finite number, 0 or more" if zero else "a finite number above 0"
        raise ConfigError(f"{key}: {value!r} is not allowed ({allowed})")


def _seed(key: str, value: int) -> None:
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}: {value!r} is not allowed (a seed from 0 to {SEED_MAX})")


def _check_optimizer(key: str, values: dict) -> None:
    for name in ("lr", "weight_decay", "momentum"):
        value = values.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            _positive(f"{key}.{name}", float(value), zero=name != "lr")


def _check_data(data: DataConfig) -> None:
    for key, value in (("data.test", data.test), ("data.val", data.val)):
        if not (math.isfinite(value) and 0 <= value < 1):
            raise ConfigError(f"{key}: {value!r} is not allowed (a fraction from 0 up to 1)")
    if data.test + data.val >= 1:
        raise ConfigError(
            f"data.test + data.val: {data.test} + {data.val} leaves no training rows (below 1)"
        )
    _seed("data.split_seed", data.split_seed)
    _seed("data.synth.seed", data.synth.seed)
    _at_least("data.synth.n", data.synth.n, 1, "a number of samples")
    _at_least("data.synth.size", data.synth.size, 16, "an image side in pixels")
    if data.synth.backgrounds is not None:
        _at_least("data.synth.backgrounds", data.synth.backgrounds, 1, "a number of backgrounds")
    if data.workers is not None:
        _at_least("data.workers", data.workers, 0, "processes that decode; 0: this one")
    _at_least("data.val_samples", data.val_samples, 1)


def check_values(config: Config) -> None:
    """Ranges of the numbers a run needs (sizes against the model: ``fgdepth.engine.checks``)."""
    _seed("seed", config.seed)
    _at_least("batch_size", config.batch_size, 1)
    _check_optimizer("optimizer", dataclasses.asdict(config.optimizer))
    for i, stage in enumerate(config.stages):
        if stage.batch_size is not None:
            _at_least(f"stages.{i}.batch_size", stage.batch_size, 1)
        _check_optimizer(f"stages.{i}.optimizer", stage.optimizer)
    _check_data(config.data)
    _at_least("eval.batch_size", config.eval.batch_size, 1)
    _at_least("eval.images", config.eval.images, 0)
    _at_least("eval.val_reports", config.eval.val_reports, 0)
    if config.eval.max_samples is not None:
        _at_least("eval.max_samples", config.eval.max_samples, 1)
    if config.max_minutes is not None:
        _positive("max_minutes", config.max_minutes, zero=True)
    if config.train_minutes is not None:
        _positive("train_minutes", config.train_minutes)
    _positive("checkpoint_minutes", config.checkpoint_minutes)
