"""Data benchmarks: generator speed, and loader samples/s for folder, zip and cache.

python benchmarks/loader.py            # full run, writes the 'loader' section of BENCHMARKS.md
python benchmarks/loader.py --smoke    # seconds; prints only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, publish, table  # noqa: E402
from fgdepth.config import SynthConfig  # noqa: E402
from fgdepth.data import build_cache, open_dataset  # noqa: E402
from fgdepth.data.synth import generate  # noqa: E402


def rate(fn, count: int, min_seconds: float) -> float:
    """Items per second of ``fn()`` (which handles ``count`` items), repeated for a while."""
    fn()  # warm up
    done, start = 0, time.perf_counter()
    while True:
        fn()
        done += count
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def decode(dataset, rows, size) -> None:
    for i in rows:
        dataset.sample(i, size)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args(argv)
    n = 60 if args.smoke else args.n
    secs = 0.2 if args.smoke else 3.0
    sizes = [64] if args.smoke else [64, 96, 192]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = SynthConfig(n=n, size=192, seed=0)
        gen = {}
        for workers in (1, 2):
            start = time.perf_counter()
            generate(spec, tmp / f"ds{workers}", workers=workers, quiet=True)
            gen[workers] = n / (time.perf_counter() - start)
        generate(spec, tmp / "ds.zip", as_zip=True, workers=2, quiet=True)
        folder, zipped = open_dataset(tmp / "ds1"), open_dataset(tmp / "ds.zip")
        rng = np.random.default_rng(0)
        for size in sizes:
            picks = rng.integers(0, n, 64)
            folder_rate = rate(partial(decode, folder, picks, size), len(picks), secs)
            zip_rate = rate(partial(decode, zipped, picks, size), len(picks), secs)
            start = time.perf_counter()
            cache = build_cache(folder, size, workers=2, root=tmp / "cache", quiet=True)
            build = n / (time.perf_counter() - start)
            cache_rate = rate(partial(cache.batch, rng.integers(0, n, 64)), 64, secs)
            rows.append(
                [
                    size,
                    f"{folder_rate:,.0f}",
                    f"{zip_rate:,.0f}",
                    f"{build:,.0f}",
                    f"{cache_rate:,.0f}",
                ]
            )
    body = "\n".join(
        [
            "## Data: generator and loader",
            "",
            f"Machine: {machine()}.",
            f"Command: `python benchmarks/loader.py --n {n}` "
            f"(a {n}-sample built-in dataset at 192 px).",
            "",
            f"Generator (`fgdepth synth`, 192 px): {gen[1]:,.0f} samples/s with 1 worker, "
            f"{gen[2]:,.0f} samples/s with 2 workers.",
            "",
            "Loader, samples/s (random samples; folder and zip decode JPEG/PNG per sample, at "
            "reduced scale where possible; the cache is built once per dataset and size, then "
            "read as batches of 64 from a memory map):",
            "",
            table(["size px", "folder", "zip", "cache build (2 workers)", "cache"], rows),
        ]
    )
    publish("loader", body, write=not args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
