"""``fgdepth tune``: a study per dataset and split; a named study on other data is refused in
one line unless ``--force-data``. (The studies themselves: tests/test_tuning.py.)"""

import csv
import os
import re

import optuna
import pytest

from fgdepth.app.cli import main
from fgdepth.app.tune import study_data
from fgdepth.config import load_config
from fgdepth.tuning import open_storage
from fgdepth.tuning.storage import DATA, DATA_FORCED, DATA_PATH
from tests.app.test_bad_input import _every_trial_fails
from tests.conftest import write_dataset


def smoke(*sets):
    return load_config("bce_ssim", "smoke", list(sets))


# --set VALUE: whether the data key changes with it (the base: the smoke built-in data)
KEYED = {
    "data.synth.seed=1": True,  # other data
    "data.synth.n=60": True,
    "data.split_seed=1": True,  # the same data, other splits
    "data.test=0.2": True,
    "data.val=0.2": True,
    "data.val_samples=4": True,  # other rows score the trials
    "eval.max_samples=8": False,  # test rows, which never choose a trial
    "seed=1": False,
    "tune.trials=3": False,
}


@pytest.mark.parametrize(("override", "changes"), KEYED.items())
def test_the_data_key_follows_the_data_and_the_rows_that_score_a_trial(
    override, changes, tmp_path, monkeypatch
):
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    base, other = study_data(smoke()), study_data(smoke(override))
    assert re.fullmatch("[0-9a-f]{8}", base.key) and base == study_data(smoke())
    assert (other.key != base.key) == changes
    assert base.where == "the built-in data synth-n40-s64-seed0"
    assert not (tmp_path / "cache").exists()  # keyed by its settings, before it is made


def test_data_on_disk_is_keyed_by_its_fingerprint(tmp_path):
    a, b = write_dataset(tmp_path / "a", rows=6), write_dataset(tmp_path / "b", rows=7)
    key_a = study_data(smoke(f"data.path={a}"))
    assert key_a == study_data(smoke(f"data.path={a}"))  # opened again: the same
    assert key_a.where == str(a.resolve())
    assert key_a.key != study_data(smoke(f"data.path={b}")).key
    assert key_a.key != study_data(smoke(f"data.path={a}", "data.split_seed=1")).key


@pytest.fixture
def two_datasets(tmp_path, monkeypatch):
    """Two small datasets and empty stores; each trial fails at once (no training: this is
    about which study a command opens)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    _every_trial_fails(monkeypatch)
    return write_dataset(tmp_path / "a", rows=6), write_dataset(tmp_path / "b", rows=7)


def test_each_dataset_has_a_study_and_a_named_one_continues_on_other_data_only_when_forced(
    two_datasets, tmp_path, capsys
):
    a, b = two_datasets
    storage = f"sqlite:///{tmp_path}/optuna.db"

    def tune(data, *words):
        code = main(["tune", "--experiment", "bce_ssim", "--profile", "smoke", "--data", str(data),
                     "--no-system-metrics", "--storage", storage, *words])  # fmt: skip
        out, err = capsys.readouterr()
        return code, out, err.strip().splitlines()

    def study(name):
        return optuna.load_study(study_name=name, storage=open_storage(storage))

    for data in (a, b):  # every trial fails: the study is made, with no best trial
        code, _, err = tune(data, "--trials", "1")
        assert code == 2 and err[-1].endswith("no trial completed (1 fail); no best configuration")
    keys = {d: study_data(smoke(f"data.path={d}")).key for d in (a, b)}
    names = {d: f"bce_ssim-smoke-{keys[d]}" for d in (a, b)}
    summaries = optuna.get_all_study_summaries(open_storage(storage))
    assert sorted(s.study_name for s in summaries) == sorted(names.values())
    for data in (a, b):
        attrs = study(names[data]).user_attrs
        assert (attrs[DATA], attrs[DATA_PATH]) == (keys[data], str(data.resolve()))

    code, _, err = tune(b, "--trials", "2", "--study", names[a])
    assert code == 2 and err == [
        f"fgdepth: study '{names[a]}' was tuned on other data or splits ({keys[a]}, "
        f"{a.resolve()}); this data is {keys[b]} ({b.resolve()}): leave out --study for a "
        "study of its own, or add --force-data to continue it on this data"
    ]
    assert len(study(names[a]).trials) == 1  # nothing ran

    code, out, err = tune(b, "--trials", "2", "--study", names[a], "--force-data")
    assert code == 2 and err[-1].endswith("no trial completed (2 fail); no best configuration")
    assert f"study '{names[a]}' mixes data: tuned on {keys[a]}, {a.resolve()}, " in out
    forced = study(names[a])
    assert len(forced.trials) == 2  # continued, on b
    assert forced.user_attrs[DATA_FORCED] == [{"key": keys[b], "path": str(b.resolve())}]


@pytest.mark.slow  # a real study of smoke trials and its comparison, in a subprocess: about 70 s
def test_a_time_budget_stops_starting_trials_at_it_and_the_best_is_compared_to_the_default(
    tmp_path,
):
    """``--minutes``: no trial starts after the budget, the one under way ends within a
    trial's time of it, every trial trains for the same minutes (the recipe's), and each
    trial's line reaches a console that is a pipe (stdout is not a terminal here).
    ``--compare``: the best configuration and the default, two seeds each, as child runs of
    the study's run; the table and picture beside the summary and on the parent run."""
    import datetime
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
           "FGDEPTH_CACHE": str(tmp_path / "cache")}  # fmt: skip
    env.pop("MLFLOW_RUN_ID", None)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    done = subprocess.run(
        [sys.executable, "-m", "fgdepth", "tune", "--experiment", "bce_ssim", "--profile",
         "smoke", "--minutes", "0.25", "--trials", "1", "--storage", storage,
         "--no-system-metrics", "--compare", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
    trials = optuna.load_study(study_name=name, storage=open_storage(storage)).trials
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`fgdepth.kind` = 'tune'",
    )[0]
    deadline = datetime.datetime.fromisoformat(parent.data.tags["fgdepth.deadline"])
    assert len(trials) > 1  # --trials 1 is no limit under a budget
    assert all(t.datetime_start <= deadline for t in trials)
    longest = max(t.datetime_complete - t.datetime_start for t in trials)
    assert max(t.datetime_complete for t in trials) <= deadline + longest
    lines = done.stdout.splitlines()
    assert any(line.startswith("each trial trains for ") and "budget 0.25 min" in line
               for line in lines)  # fmt: skip
    progress = [line for line in lines if re.match(r"trial \d+ (complete|pruned) ", line)]
    assert len(progress) == len(trials) and "min left (ends about " in progress[-1]

    minutes = parent.data.params["trial_train_minutes"]
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    compared = [r for r in runs if "fgdepth.compare" in r.data.tags]
    assert len(runs) - len(compared) == len(trials)
    assert {r.data.params.get("train_minutes") for r in runs} == {minutes}  # compared ones too
    assert sorted((r.data.tags["fgdepth.compare"], r.data.params["seed"]) for r in compared) == [
        ("default", "0"), ("default", "1"), ("tuned", "0"), ("tuned", "1"),
    ]  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "tuned_vs_default.csv").open()))
    assert [r["metric"].split(" (")[0] for r in rows] == [
        "mask_iou", "depth_rmse", "fg_distance_error", "score",
    ]  # fmt: skip
    assert {r["verdict"] for r in rows} <= {"better", "same", "worse"}
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"tuned_vs_default.csv", "tuned_vs_default.png"} <= logged
    assert parent.data.tags["fgdepth.tuned_score"] == rows[-1]["verdict"]
