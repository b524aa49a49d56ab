"""The built-in dataset: generated once per (n, size, seed) and reused by every run."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from fgdepth.data.cache import cache_root
from fgdepth.data.synth import SynthSpec, generate


def builtin_dataset(n: int, size: int, seed: int, workers: int = 1) -> Path:
    """The folder of the built-in dataset with these arguments, generating it if needed."""
    root = cache_root() / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"synth-n{n}-s{size}-seed{seed}"
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.csv").exists():
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            generate(SynthSpec(n=n, size=size, seed=seed), tmp, workers=workers)
            tmp.rename(folder)
    return folder
