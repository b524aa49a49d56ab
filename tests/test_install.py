"""A non-editable install: the shipped experiments come with the package, so a user can train
from any folder by an experiment's name."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parent.parent


def _run(args: list, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out


@pytest.mark.slow
def test_an_installed_fgdepth_trains_a_shipped_experiment_from_an_empty_folder(tmp_path):
    # a copy of what the package is built from, so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "fgdepth", source / "fgdepth", ignore=shutil.ignore_patterns("__pycache__")
    )
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy only
    # no pip of its own: a venv's bundled setuptools may predate building wheels by itself,
    # so this machine's pip installs into the venv and builds with this machine's setuptools
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
         tmp_path, env)  # fmt: skip
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
           "--no-build-isolation"]  # fmt: skip
    _run([*pip, str(source)], tmp_path, env)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([str(python), "-c", "import fgdepth; print(fgdepth.__file__)"], empty, env)
    assert where.stdout.strip().startswith(str(venv))
    env |= {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "FGDEPTH_CACHE": str(tmp_path / "cache"),
    }
    train = [str(venv / "bin" / "fgdepth"), "train", "--config", "default", "--profile", "smoke"]
    _run(train, empty, env)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [(r.info.run_name, r.info.status) for r in runs] == [("default seed 0", "FINISHED")]
