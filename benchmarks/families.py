"""The project's three data families, each written once into a benchmark folder.

- ``built-in``: fgdepth's own generator, as the `cpu` profile makes it (``fgdepth synth``);
- ``street``: street scenes on one ground plane (``benchmarks/street_data.py``);
- ``room``: rooms with platforms, stairs, ramps and furniture, textured with real photographs,
  foregrounds of six kinds whose size does not give their distance (``benchmarks/room_data.py``).

A recipe or model change is judged on all three: depth that is easy on one family (a single
ground plane) can hide a model that does not place the object at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import room_data, street_data  # noqa: E402
from fgdepth.config import SynthConfig  # noqa: E402
from fgdepth.data.synth import generate  # noqa: E402

NAMES = ("built-in", "street", "room")


def _builtin(out: Path, n: int, workers: int) -> None:
    generate(SynthConfig(n=n, size=192, seed=0), out, workers=workers)


def _street(out: Path, n: int, workers: int) -> None:
    street_data.write(out, n, seed=1, workers=workers)


def _room(out: Path, n: int, workers: int) -> None:
    room_data.write(out, n, seed=2, workers=workers)


WRITERS = {"built-in": _builtin, "street": _street, "room": _room}
COMMANDS = {  # how a user writes the same folder by hand
    "built-in": "fgdepth synth --n {n} --size 192 --seed 0 --out {out}",
    "street": "python benchmarks/street_data.py {out} --n {n} --seed 1",
    "room": "python benchmarks/room_data.py {out} --n {n} --seed 2",
}


def folder(root: Path, family: str, n: int) -> Path:
    return Path(root) / f"{family}-n{n}"


def dataset(root: Path, family: str, n: int, workers: int = 2) -> Path:
    """The family's folder of ``n`` rows under ``root``, written if it has no manifest yet."""
    if family not in WRITERS:
        raise KeyError(f"unknown data family '{family}'; valid: {', '.join(NAMES)}")
    out = folder(root, family, n)
    if not (out / "manifest.csv").exists():
        if out.exists() and family != "built-in":  # the built-in generator resumes its own
            import shutil

            shutil.rmtree(out)
        WRITERS[family](out, n, workers)
    return out


def command(root: Path, family: str, n: int) -> str:
    out = folder(root, family, n)
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    return COMMANDS[family].format(n=n, out=shown)
