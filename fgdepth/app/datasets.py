"""Which dataset a config names: a folder or zip, or the built-in one (generated once)."""

from __future__ import annotations

from pathlib import Path

from fgdepth.config import Config
from fgdepth.data import Dataset, open_dataset
from fgdepth.data.builtin import builtin_dataset, builtin_folder

BUILTIN = ("", "builtin", "none", None)  # what names the built-in dataset in data.path


def data_path(text: str | None) -> str | None:
    """``--data`` as ``data.path``: None for the built-in dataset."""
    return None if text in BUILTIN else text


def is_builtin(config: Config) -> bool:
    return config.data.path in BUILTIN


def builtin_exists(config: Config) -> bool:
    synth = config.data.synth
    return (builtin_folder(synth) / "manifest.csv").exists()


def resolve_dataset(config: Config, path: str | Path | None = None) -> Dataset:
    """The configured dataset (or the one at ``path``) with the config's splits; the built-in
    one is generated once, then reused."""
    from fgdepth.data.modes import decode_workers

    data = config.data
    if path is None and is_builtin(config):
        workers = decode_workers(data.workers)
        path = builtin_dataset(data.synth, workers)
    return open_dataset(Path(path or data.path), data, skip_bad=data.skip_bad)
