import os
import shutil
from pathlib import Path

# `make test` runs the suite in one pytest-xdist worker per core, and many tests start training
# processes of their own: each runs on one thread (inherited through the environment), since
# OpenMP threads that outnumber the cores spin against each other and slow everything down.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fgdepth.config import SynthConfig  # noqa: E402
from fgdepth.data.synth import generate  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # if torch came in before


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small built-in dataset (40 samples, 64 px, 5 backgrounds), shared read-only."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate(SynthConfig(n=40, size=64, seed=3, backgrounds=5), out, quiet=True)
    return out


@pytest.fixture(scope="session")
def synth_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthzip") / "ds.zip"
    generate(SynthConfig(n=40, size=64, seed=3, backgrounds=5), out, as_zip=True, quiet=True)
    return out


@pytest.fixture
def copy_of(tmp_path):
    """A writable copy of a dataset folder, to break in a test."""

    def make(src: Path) -> Path:
        dst = tmp_path / "copy"
        shutil.copytree(src, dst)
        return dst

    return make


def write_dataset(root: Path, rows: int = 3, size=(40, 30), mask_size=None, depth_mode="L"):
    """A hand-made dataset in the documented format, independent of the generator."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["fg_bg,bg,mask,depth,split"]
    w, h = size
    mw, mh = mask_size or size
    for i in range(rows):
        bg = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        fg = bg.copy()
        fg[5:15, 5:20] = 255
        mask = np.zeros((mh, mw), np.uint8)
        mask[mh * 5 // h : mh * 15 // h, mw * 5 // w : mw * 20 // w] = 255
        if depth_mode == "I;16":
            depth = Image.fromarray(np.full((mh, mw), 65535 // 2, np.uint16))
        else:
            depth = Image.fromarray(np.full((mh, mw), 128, np.uint8))
        Image.fromarray(bg).save(root / f"bg{i}.png")
        Image.fromarray(fg).save(root / f"fg{i}.jpg", quality=95)
        Image.fromarray(mask).save(root / f"m{i}.png")
        depth.save(root / f"d{i}.png")
        split = ["train", "val", "test"][i % 3]
        lines.append(f"fg{i}.jpg,bg{i}.png,m{i}.png,d{i}.png,{split}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 for this test session."""
    from tests.services import Postgres

    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory):
    """A tracking store with two finished smoke runs (bce_ssim, ssim) in experiment 'compare'."""
    from types import SimpleNamespace

    from mlflow.tracking import MlflowClient

    from fgdepth.app.train import RunSpec, train
    from fgdepth.config import load_config

    folder = tmp_path_factory.mktemp("trained")
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store is created here, from one process
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "FGDEPTH_CACHE")}
    cwd = os.getcwd()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["FGDEPTH_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    os.chdir(folder)
    try:
        runs = {}
        for name in ("bce_ssim", "ssim"):
            config = load_config(name, "smoke")
            spec = RunSpec(config, experiment_name="compare", run_name=name, entry_point=name,
                           system_metrics=False)  # fmt: skip
            _, runs[name] = train(spec)
    finally:
        os.chdir(cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return SimpleNamespace(folder=folder, uri=uri, runs=runs)
