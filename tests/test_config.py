import ast
import dataclasses
from pathlib import Path

import pytest
import yaml

import fgdepth.config
from fgdepth.config import EXPERIMENTS_DIR, ConfigError, load_config, scaled_stages
from fgdepth.engine.checks import check, load_experiment

EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem != "profiles")


@pytest.mark.parametrize("profile", ["smoke", "cpu", "full"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_loads_under_every_profile(name, profile):
    config = load_experiment(name, profile)
    assert config.name == name and config.profile == profile


def test_experiments_inherit_and_list_only_what_differs():
    base, bce_ssim = load_experiment("default"), load_experiment("bce_ssim")
    assert bce_ssim.loss == {"mask": {"bce": 1.0}, "depth": {"ssim": 1.0}}
    assert bce_ssim.stages == base.stages and bce_ssim.model == base.model


def test_seed_original_uses_the_original_recipe():
    c = load_experiment("seed_original")
    assert c.model.name == "seed" and c.model.options == {}
    assert (c.optimizer.name, c.optimizer.lr) == ("sgd", 0.01)
    assert (c.schedule.name, c.schedule.step_size, c.schedule.gamma) == ("step", 2, 0.1)
    assert [(s.size, s.samples) for s in c.stages] == [(64, 180000), (96, 60000), (192, 20000)]


def test_profile_scales_stages():
    stages = scaled_stages(load_experiment("default", "smoke"))
    assert all(s.size == 32 and s.epochs == 1 and s.samples >= 16 for s in stages)


def test_a_stage_can_be_left_out_when_a_profile_caps_its_size():
    skip = ["stages.3.when_capped=skip"]
    sizes = {
        profile: [s.size for s in scaled_stages(load_experiment("default", profile, skip))]
        for profile in ("full", "cpu")
    }
    assert sizes == {"full": [48, 64, 96, 192], "cpu": [48, 64, 96]}
    shrunk = scaled_stages(load_experiment("default", "cpu", ["stages.3.when_capped=shrink"]))
    assert [s.size for s in shrunk] == [48, 64, 96, 96]
    every = [f"stages.{i}.when_capped=skip" for i in range(4)]
    with pytest.raises(ConfigError, match="profile 'smoke' leaves no stage"):
        load_experiment("default", "smoke", every)


def test_set_overrides_nested_values_and_list_items():
    c = load_experiment("default", None, ["optimizer.lr=0.5", "stages.1.epochs=7", "model.width=8"])
    assert c.optimizer.lr == 0.5 and c.stages[1].epochs == 7 and c.model.options["width"] == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optimiser.lr=0.1"], "optimiser: unknown key; did you mean 'optimizer'?"),
        (["optimizer.lr=fast"], "optimizer.lr: expected float, got 'fast'"),
        (["model.name=resnet"], "unknown model 'resnet'; valid: seed, unet"),
        (["loss.mask=focal"], "unknown loss 'focal'; valid: bce, dice, fg_l1, l1, lovasz, ssim"),
        (["stages.0.freeze=[heads]"], "unknown parameter group 'heads'"),
        (["stages.0.epochs=0"], "stages.0.epochs: must be at least 1"),
        (["stages.0.when_capped=drop"], "stages.0.when_capped: 'drop' is not one of shrink, skip"),
        (["stages.0.size=72"], "multiples of 16"),
        (["stages.9.epochs=1"], "'9' is not an index"),
        (["model.depth=3"], "model.depth: unknown key"),
        (["precision=fp8"], "precision: 'fp8' is not one of"),
        (["optimizer.name=lion"], "unknown optimizer 'lion'"),
        (["schedule.name=poly"], "unknown schedule 'poly'"),
        (["lr"], "expected KEY=VALUE"),
        (["stages.0.optimizer.lrr=1"], "stages.0.optimizer.lrr: unknown key; did you mean 'lr'?"),
    ],
)
def test_bad_config_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_experiment("default", "smoke", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# one row per checked value: the key, the value and what is allowed, in one line
@pytest.mark.parametrize(
    "override, message",
    [
        ("model.width=-3", "model.width: -3 is not allowed (a whole number, 1 or more)"),
        ("model.width=0", "model.width: 0 is not allowed"),
        ("model.context=3", "model.context: expected true or false, got 3"),
        ("model.depth_stride=3", "model: unet cannot be built (depth_stride must be 1 or 2"),
        ("batch_size=0", "batch_size: 0 is not allowed (a whole number, 1 or more)"),
        ("stages.0.batch_size=-2", "stages.0.batch_size: -2 is not allowed"),
        ("optimizer.lr=-1", "optimizer.lr: -1.0 is not allowed (a finite number above 0)"),
        ("optimizer.lr=nan", "optimizer.lr: nan is not allowed (a finite number above 0)"),
        ("optimizer.lr=0", "optimizer.lr: 0.0 is not allowed"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay: -0.1 is not allowed"),
        ("stages.0.optimizer.lr=.inf", "stages.0.optimizer.lr: inf is not allowed"),
        ("seed=-1", "seed: -1 is not allowed (a seed from 0 to 4294967295)"),
        (f"seed={2**63 + 1}", f"seed: {2**63 + 1} is not allowed (a seed from 0 to"),
        ("data.split_seed=-3", "data.split_seed: -3 is not allowed"),
        ("data.synth.seed=-3", "data.synth.seed: -3 is not allowed"),
        ("data.synth.n=0", "data.synth.n: 0 is not allowed (a number of samples, 1 or more)"),
        ("data.synth.size=7", "data.synth.size: 7 is not allowed (an image side in pixels, 16"),
        ("data.workers=-1", "data.workers: -1 is not allowed (processes that decode; 0: this"),
        ("data.cache=sometimes", "data.cache: 'sometimes' is not one of auto, always, never"),
        ("data.cache_budget_gb=-1", "data.cache_budget_gb: must be 0 or more, got -1.0"),
        ("data.val_samples=0", "data.val_samples: 0 is not allowed"),
        ("data.test=1.5", "data.test: 1.5 is not allowed (a fraction from 0 up to 1)"),
        ("data.val=0.8", "data.test + data.val: 0.3 + 0.8 leaves no training rows"),
        ("stages.0.epochs=-1", "stages.0.epochs: must be at least 1, got -1"),
        ("stages.0.samples=0", "stages.0.samples: must be at least 1, got 0"),
        ("stages.0.size=-16", "stages.0.size: unet takes sizes that are multiples of 16"),
        ("eval.batch_size=0", "eval.batch_size: 0 is not allowed"),
        ("eval.images=-1", "eval.images: -1 is not allowed (a whole number, 0 or more)"),
        ("eval.max_samples=0", "eval.max_samples: 0 is not allowed"),
        ("max_minutes=-5", "max_minutes: -5.0 is not allowed (a finite number, 0 or more)"),
        ("checkpoint_minutes=0", "checkpoint_minutes: 0.0 is not allowed"),
    ],
)
def test_a_value_out_of_range_is_one_line_naming_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_experiment("default", "smoke", [override])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_folder_given_as_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_experiment(tmp_path)


def test_unknown_experiment_and_profile_list_valid_names():
    with pytest.raises(ConfigError, match="valid: .*bce_ssim"):
        load_experiment("bce_sim")
    with pytest.raises(ConfigError, match="valid: smoke, cpu, full"):
        load_experiment("default", "tiny")


def test_yaml_errors_and_unknown_top_level_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)
    bad.write_text("inherit: default\nepochs: 3\n")
    with pytest.raises(ConfigError, match="epochs: unknown key"):
        load_experiment(bad)


def test_the_schema_loads_without_the_registries_and_the_engine_checks_the_names():
    config = load_config("default", "smoke", ["model.name=resnet"])  # a name, not checked here
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        check(config)
    with pytest.raises(ConfigError, match="optimizer.lr: -1.0 is not allowed"):
        load_config("default", "smoke", ["optimizer.lr=-1"])


def test_checking_a_config_builds_no_model(monkeypatch):
    from torch import nn

    def refuse(*args, **kwargs):
        raise AssertionError("a module was built")

    monkeypatch.setattr(nn.Module, "__init__", refuse)
    config = load_experiment("staged_transfer", "smoke", ["model.input_scale=2"])
    assert config.stages[1].freeze
    with pytest.raises(ConfigError, match="unknown parameter group 'heads'"):
        load_experiment("default", "smoke", ["stages.0.freeze=[heads]"])


def test_config_imports_no_other_part_of_fgdepth_but_its_errors():
    tree = ast.parse(Path(fgdepth.config.__file__).read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m.startswith("fgdepth") and m != "fgdepth.errors"]


# --- each default once: the recipe's values live in default.yaml --------------------------------

# Keys that default.yaml sets where the schema's default is deliberately neutral, not the
# recipe's value: a file that does not inherit default.yaml gets a plain, valid experiment, not
# a second copy of the recipe that could drift from the file.
NEUTRAL = {
    # the file's own identity: a file without them is "experiment", with no description
    "name",
    "description",
    # a model's options are its constructor's (the bare architecture); the schema holds none
    "model.width",
    "model.context",
    "model.input_scale",
    "model.depth_stride",
    "model.test_flip",
    "model.contact",
    "model.contact_fit",
    # the recipe's stages are data of the recipe; the schema's one small stage (64 px, 1000
    # samples) only lets a file without stages train
    "stages",
    # no search space unless a file gives one (`fgdepth tune` then says that there is none)
    "tune.lr",
    "tune.loss_weights",
    "tune.batch_size",
    "tune.schedules",
    # a study trains each trial once unless a file asks for its leaders to be run again
    "tune.confirm",
}


def _set_in_file(raw: dict, schema, where: str = ""):
    """(key, the file's value, the schema's default or None) for each value the file sets: a
    mapping read over a dataclass is walked into, anything else (lists, loss maps) compared
    whole."""
    for key, value in raw.items():
        path = f"{where}{key}"
        default = getattr(schema, key, None)
        if isinstance(value, dict) and dataclasses.is_dataclass(default):
            yield from _set_in_file(value, default, f"{path}.")
        else:
            yield path, value, default


def test_the_schema_defaults_agree_with_default_yaml_or_are_neutral():
    raw = yaml.safe_load((EXPERIMENTS_DIR / "default.yaml").read_text())
    leaves = list(_set_in_file(raw, fgdepth.config.Config()))
    differ = {key: (value, default) for key, value, default in leaves if value != default}
    unexplained = {k: v for k, v in differ.items() if k not in NEUTRAL}
    assert not unexplained, f"schema defaults that contradict default.yaml: {unexplained}"
    stale = NEUTRAL - set(differ)  # the list names only what the file sets, and differs
    assert not stale, f"allowed as neutral but set equal or not set by default.yaml: {stale}"
