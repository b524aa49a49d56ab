"""``fgdepth train --plan`` and the data-mode refusals, as a user runs them."""

import json

import pytest

from fgdepth.app.cli import main


@pytest.fixture
def store(tmp_path, monkeypatch):
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)
    return db


def test_plan_json_lists_every_stage_of_the_full_profile(synth_dir, store, capsys):
    code = main(["train", "--config", "default", "--profile", "full", "--data", str(synth_dir),
                 "--plan", "--json", "--plan-steps", "0"])  # fmt: skip
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert [s["size"] for s in plan["stages"]] == [48, 64, 96, 192]  # nothing capped at `full`
    assert all(s["mode"] in ("cache", "stream") for s in plan["stages"])
    assert all(set(s) >= {"name", "size", "rows", "mode", "cache_bytes"} for s in plan["stages"])
    assert plan["disk_free_bytes"] > 0 and plan["dataset_rows"] == 40
    # 180,000 samples per epoch on a 24-row train split: planned on those rows, and said
    assert plan["refused"].startswith("stages.0.samples: 180000 is more than the 24 samples")
    # the 64 px source: inputs are never read above it
    assert [s["input_size"] for s in plan["stages"]] == [64, 64, 96, 192]
    assert not store.exists()  # planning creates no run


def test_plan_of_the_builtin_data_generates_nothing(store, capsys, monkeypatch):
    from fgdepth.config import SynthConfig
    from fgdepth.data import modes
    from fgdepth.data.builtin import builtin_folder

    monkeypatch.setattr(modes, "free_bytes", lambda path: 100 * 10**9)  # a 100 GB disk
    code = main(["train", "--config", "default", "--profile", "full", "--plan",
                 "--plan-steps", "0", "--set", "data.cache_budget_gb=40"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "400,000 rows" in out
    names = ("s48", "s64", "s96", "s192")
    lines = [line.split() for line in out.splitlines() if line.startswith(names)]
    assert [(line[0], line[5]) for line in lines] == [
        ("s48", "cache"),
        ("s64", "cache"),
        ("s96", "stream"),
        ("s192", "stream"),
    ]  # 48 and 64 px (13.8 + 24.6 GB) fit the 40 GB budget; 96 px would need 55 more
    assert not builtin_folder(SynthConfig(n=400000, size=192, seed=0)).exists()


def test_always_over_the_budget_is_refused_before_any_decoding(
    synth_dir, store, capsys, tmp_path, monkeypatch
):
    # an empty cache root: a cache that another test built would leave nothing to write
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    sets = ["--set", "data.cache=always", "--set", "data.cache_budget_gb=0.000001"]
    code = main(["train", "--config", "default", "--profile", "smoke", "--data", str(synth_dir),
                 *sets])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("fgdepth: data.cache: always needs") and "budget" in err
    assert not store.exists()  # no MLflow run
