"""``fgdepth.app.cli``: arguments become the calls of the application layer (nothing trains)."""

import pytest

from fgdepth.app import cli


@pytest.fixture
def calls(monkeypatch):
    """Each application entry point replaced by one that records its arguments."""
    seen = {}

    def record(name):
        def fake(*args, **kwargs):
            seen[name] = (args, kwargs)
            return 0

        return fake

    import fgdepth.app.evaluate as evaluate
    import fgdepth.app.study as study
    import fgdepth.app.train as train
    import fgdepth.app.tune as tune

    monkeypatch.setattr(train, "train_command", record("train"))
    monkeypatch.setattr(study, "study_command", record("study"))
    monkeypatch.setattr(tune, "tune_command", record("tune"))
    monkeypatch.setattr(evaluate, "evaluate_logged_model", record("evaluate"))
    return seen


def test_train_builds_one_run_spec(calls):
    argv = ["train", "--config", "bce", "--profile", "smoke", "--data", "builtin",
            "--run-name", "r", "--no-system-metrics", "--checkpoint-dir", "ck"]  # fmt: skip
    assert cli.main(argv) == 0
    (spec, resume, workers, passed), _ = calls["train"]
    assert spec.config.name == "bce" and spec.config.data.path is None  # the built-in alias
    assert spec.run_name == "r" and not spec.system_metrics and spec.checkpoint_dir == "ck"
    assert resume is None and workers == 1 and passed == argv


def test_train_resume_takes_the_states_config(calls):
    assert cli.main(["train", "--resume", "latest"]) == 0
    (spec, resume, _, _), _ = calls["train"]
    assert spec.config is None and resume == "latest"


def test_tune_flags_become_config_overrides(calls):
    argv = ["tune", "--experiment", "bce_ssim", "--profile", "smoke", "--trials", "3",
            "--pruner", "none", "--multi-objective", "--train-best", "smoke"]  # fmt: skip
    assert cli.main(argv) == 0
    (config, experiment, train_best), options = calls["tune"]
    assert config.tune.trials == 3 and config.tune.pruner.name == "none"
    assert config.tune.objective.multi and experiment == "bce_ssim" and train_best == "smoke"
    assert options["storage"] == "" and options["workers"] == 1 and options["out"] is None
    assert options["force_data"] is False


# --force-data as written by hand, and as the MLproject passes it (-P force_data=yes|no)
@pytest.mark.parametrize(
    ("words", "force"),
    [([], False), (["--force-data"], True), (["--force-data", "yes"], True),
     (["--force-data", "no"], False)],
)  # fmt: skip
def test_tune_force_data_reaches_the_study(calls, words, force):
    assert cli.main(["tune", "--profile", "smoke", *words, "--study", "s"]) == 0
    _, options = calls["tune"]
    assert options["force_data"] is force and options["study_name"] == "s"


def test_study_passes_the_experiments(calls):
    assert cli.main(["study", "--experiments", "bce,dice", "--profile", "smoke"]) == 0
    (names, profile, *_), _ = calls["study"]
    assert names == ["bce", "dice"] and profile == "smoke"


@pytest.mark.parametrize("gpu, profile", [(False, "cpu"), (True, "full")])
def test_every_command_defaults_to_auto_full_with_a_gpu_and_cpu_without(
    calls, monkeypatch, capsys, gpu, profile
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Some GPU")
    assert cli.main(["train", "--config", "bce"]) == 0
    assert calls["train"][0][0].config.profile == profile  # what the run logs
    assert cli.main(["study", "--experiments", "bce"]) == 0
    assert calls["study"][0][1] == profile
    assert cli.main(["tune", "--experiment", "bce_ssim", "--train-best", "auto"]) == 0
    (config, _, train_best), _ = calls["tune"]
    assert config.profile == train_best == profile
    why = "GPU: Some GPU" if gpu else "no GPU"
    assert f"profile auto: {profile} ({why})" in capsys.readouterr().err  # stdout may be JSON
    assert cli.main(["train", "--config", "bce", "--profile", "smoke"]) == 0
    assert calls["train"][0][0].config.profile == "smoke"
    assert "profile auto" not in capsys.readouterr().err


def test_evaluate_defaults_to_the_runs_own_data_and_split(calls, capsys):
    assert cli.main(["evaluate", "--model", "runs:/x/model"]) == 0
    (spec,), kwargs = calls["evaluate"]
    assert spec == "runs:/x/model" and kwargs["data"] is None and kwargs["split"] == "test"
    assert kwargs["split_overrides"] == {"seed": None, "test": None, "val": None, "skip_bad": None}
    assert cli.main(["evaluate", "--model", "m.pt", "--split-seed", "5", "--test", "0.2"]) == 0
    overrides = calls["evaluate"][1]["split_overrides"]
    assert overrides["seed"] == 5 and overrides["test"] == 0.2
