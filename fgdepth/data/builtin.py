"""The built-in dataset: generated once per ``SynthConfig`` and reused by every run."""

from __future__ import annotations

import fcntl
from pathlib import Path

from fgdepth.config import SynthConfig
from fgdepth.data.cache import cache_root, check_cache_root
from fgdepth.data.synth import dataset_yaml, generate
from fgdepth.data.units import DATASET_YAML


def builtin_folder(synth: SynthConfig) -> Path:
    """Where the built-in dataset ``synth`` is kept."""
    name = f"synth-n{synth.n}-s{synth.size}-seed{synth.seed}"
    if synth.backgrounds:
        name += f"-bg{synth.backgrounds}"
    return cache_root() / "datasets" / name


def builtin_dataset(synth: SynthConfig, workers: int = 1) -> Path:
    """The folder of the built-in dataset ``synth``, generating it if needed."""
    folder = builtin_folder(synth)
    root = folder.parent
    check_cache_root()  # it lives there, beside a lock file even once generated
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.csv").exists():
            # generation resumes in the same folder after an interrupted one
            tmp = folder.with_name(folder.name + ".tmp")
            generate(synth, tmp, workers=workers)
            tmp.rename(folder)
        if not (folder / DATASET_YAML).exists():  # generated before it declared its encoding
            (folder / DATASET_YAML).write_bytes(dataset_yaml())
    return folder
