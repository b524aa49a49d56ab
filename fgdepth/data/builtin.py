"""The built-in dataset: generated once per (n, size, seed) and reused by every run."""

from __future__ import annotations

import fcntl
from pathlib import Path

from fgdepth.data.cache import cache_root
from fgdepth.data.synth import SynthSpec, generate


def builtin_folder(n: int, size: int, seed: int) -> Path:
    """Where the built-in dataset with these arguments is kept."""
    return cache_root() / "datasets" / f"synth-n{n}-s{size}-seed{seed}"


def builtin_dataset(n: int, size: int, seed: int, workers: int = 1) -> Path:
    """The folder of the built-in dataset with these arguments, generating it if needed."""
    folder = builtin_folder(n, size, seed)
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.csv").exists():
            # generation resumes in the same folder after an interrupted one
            tmp = folder.with_name(folder.name + ".tmp")
            generate(SynthSpec(n=n, size=size, seed=seed), tmp, workers=workers)
            tmp.rename(folder)
    return folder
