"""The command line: bad input gives one line on stderr and exit code 2, before any work."""

import pytest
from mlflow.tracking import MlflowClient

from fgdepth.app.cli import main


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A tracking store that a command would create: ``runs()`` lists what is in it."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(tmp_path)

    def runs() -> list:
        if not db.exists():
            return []
        client = MlflowClient(f"sqlite:///{db}")
        ids = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(ids) if ids else []

    return runs


def one_line(capsys, argv: list[str]) -> tuple[int, str]:
    """Run ``fgdepth ARGV``; its exit code and its only line on stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.width=-3"], "model.width: -3 is not allowed"),
        (["--set", "batch_size=0"], "batch_size: 0 is not allowed"),
        (["--set", "optimizer.lr=-1"], "optimizer.lr: -1.0 is not allowed"),
        (["--set", "optimizer.lr=nan"], "optimizer.lr: nan is not allowed"),
        (["--seed", "-1"], "seed: -1 is not allowed (a seed from 0 to 4294967295)"),
        (["--seed", str(2**63 + 5)], f"seed: {2**63 + 5} is not allowed"),
        (["--max-minutes", "-5"], "--max-minutes: -5.0 is not allowed (0 or more"),
        (["--config", "."], ": is a folder, not a config file"),
    ],
)
def test_train_refuses_a_bad_value_in_one_line_before_a_run_exists(store, capsys, args, message):
    code, line = one_line(capsys, ["train", "--profile", "smoke", *args])
    assert code == 2 and line.startswith("fgdepth: ") and message in line
    assert store() == []


def test_max_minutes_zero_keeps_the_profiles_limit():
    from fgdepth.app.cli import _config_from_args, build_parser

    args = build_parser().parse_args(["train", "--profile", "cpu", "--max-minutes", "0"])
    assert _config_from_args(args).max_minutes == 20  # the cpu profile's


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", "0"], "--n: 0 is not allowed (1 or more)"),
        (["--n", "-5"], "--n: -5 is not allowed (1 or more)"),
        (["--size", "7"], "--size: 7 is not allowed (16 or more)"),
        (["--backgrounds", "0"], "--backgrounds: 0 is not allowed (1 or more)"),
        (["--seed", "-2"], "--seed: -2 is not allowed (a seed from 0 to 4294967295)"),
    ],
)
def test_synth_refuses_bad_arguments_in_one_line(tmp_path, capsys, args, message):
    code, line = one_line(capsys, ["synth", "--out", str(tmp_path / "ds"), *args])
    assert code == 2 and message in line
    assert not (tmp_path / "ds").exists()
