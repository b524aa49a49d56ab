"""Streaming against the decode cache, and a pass at the original study's scale.

python benchmarks/stream.py                  # both parts; writes the 'stream' section
python benchmarks/stream.py --scale-rows 0   # the throughput part only
python benchmarks/stream.py --smoke          # seconds; prints only

Part 1, on a 2,000-row built-in dataset at 192 px, per stage size of the default recipe
(64, 96, 192 px; inputs at twice the size, never above the 192 px source):
- loader samples/s: the stream with 1 and 2 workers, and the cache, batches of 16 random rows;
- the model's own training rate on random inputs (no loader);
- training samples/s from the cache and from the stream in `fit` itself (one stage, 1 epoch).

Part 2, the scale run: a built-in dataset of ``--scale-rows`` rows at 192 px is generated (its
time and size), streamed once at 192 px with 2 workers (samples/s, peak RSS of the process
and its workers, disk used beyond the dataset), and `fgdepth train --profile full --plan`
is shown for it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, publish, table  # noqa: E402
from fgdepth.config import SynthConfig, load_config  # noqa: E402
from fgdepth.data import build_model_cache, open_dataset  # noqa: E402
from fgdepth.data.cache import input_size_for  # noqa: E402
from fgdepth.data.disk import free_bytes, human  # noqa: E402
from fgdepth.data.stream import StreamData  # noqa: E402
from fgdepth.data.synth import generate  # noqa: E402
from fgdepth.engine import Callback, fit  # noqa: E402
from fgdepth.engine.precision import resolve_precision  # noqa: E402
from fgdepth.engine.timing import training_rate  # noqa: E402


def loader_rate(data, rows: np.ndarray, batch: int, seconds: float) -> float:
    """Rows per second of ``data.batches`` over random batches (after one warm-up batch,
    which starts a stream's workers)."""
    rng = np.random.default_rng(0)
    next(iter(data.batches([rng.choice(rows, batch)])))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [rng.choice(rows, batch, replace=False) for _ in range(16)]
        for b in data.batches(chunk):
            done += len(b["index"])
    return done / (time.perf_counter() - start)


class Speed(Callback):
    def __init__(self):
        self.rates = []

    def on_epoch_end(self, result, model):
        self.rates.append(result.samples_per_s)


def fit_rate(dataset, size: int, samples: int, mode: str, workers: int) -> float:
    """Training samples/s of `fit` on one stage at ``size``, its data cached or streamed: the
    mean of epochs 2 to 4 (the first includes the stream workers' start)."""
    sets = [
        f"stages=[{{name: s{size}, size: {size}, samples: {samples}, epochs: 4}}]",
        f"data.cache={mode}", f"data.workers={workers}", "data.val_samples=16",
        "eval.max_samples=16", "eval.images=0",
    ]  # fmt: skip
    speed = Speed()
    fit(load_config("default", None, sets), dataset, [speed])
    return sum(speed.rates[1:]) / len(speed.rates[1:])


def throughput(tmp: Path, n: int, sizes: list[int], seconds: float, samples: dict) -> list:
    folder = generate(SynthConfig(n=n, size=192, seed=0), tmp / "ds", workers=2, quiet=True)
    dataset = open_dataset(folder)
    rows = dataset.indices("train")
    config = load_config("default")
    device = torch.device("cpu")
    precision = resolve_precision(config.precision, device)
    out = []
    for size in sizes:
        inputs = input_size_for(size, 2, dataset.source_side())
        stream = {w: StreamData(dataset, size, inputs, workers=w) for w in (1, 2)}
        streamed = {w: loader_rate(s, rows, 16, seconds) for w, s in stream.items()}
        for s in stream.values():
            s.close()
        cache = build_model_cache(dataset, size, 2, dataset.source_side(), workers=2, quiet=True)
        cached = loader_rate(cache, rows, 16, seconds)
        stage = next(s for s in config.stages if s.size == size)
        model = training_rate(config, stage, device, precision, steps=3)
        from_cache = fit_rate(dataset, size, samples[size], "always", 2)
        from_stream = fit_rate(dataset, size, samples[size], "never", 1)
        out.append([
            size, inputs, f"{streamed[1]:,.0f}", f"{streamed[2]:,.0f}", f"{cached:,.0f}",
            f"{model:,.1f}", f"{from_cache:,.1f}", f"{from_stream:,.1f}",
            f"{100 * (from_stream / from_cache - 1):+.0f} %",
        ])  # fmt: skip
    return out


class PeakRSS:
    """The largest resident memory of this process and its children, sampled."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        me = psutil.Process()
        while not self._stop.wait(0.2):
            procs = [me, *me.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scale_run(tmp: Path, n: int, plan_steps: int, data: Path | None) -> tuple[list[str], str]:
    """Generate ``n`` rows at 192 px (or take ``data``, generated before by `fgdepth synth`),
    stream them all once, and plan the `full` profile on the built-in 400K rows (described,
    not generated)."""
    out = data or tmp / "scale"
    start = time.perf_counter()
    if data is None:
        generate(SynthConfig(n=n, size=192, seed=0), out, workers=os.cpu_count() or 1, quiet=True)
    gen_s = time.perf_counter() - start
    n = len(open_dataset(out))
    size = folder_bytes(out)
    dataset = open_dataset(out)
    rows = np.arange(len(dataset))
    batches = [rows[i : i + 64] for i in range(0, len(rows), 64)]
    free_before = free_bytes(tmp)
    stream = StreamData(dataset, 192, 192, workers=2)
    with PeakRSS() as rss:
        start = time.perf_counter()
        seen = sum(len(b["index"]) for b in stream.batches(batches))
        pass_s = time.perf_counter() - start
    stream.close()
    extra = free_before - free_bytes(tmp)
    plan = subprocess.run(
        [sys.executable, "-m", "fgdepth", "train", "--config", "default", "--profile", "full",
         "--plan", "--plan-steps", str(plan_steps)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    made = (
        f"generated {n:,} rows at 192 px in {gen_s / 60:.1f} min ({n / gen_s:,.0f} rows/s, "
        f"{os.cpu_count()} workers)"
        if data is None
        else f"a built-in dataset of {n:,} rows at 192 px made before by `fgdepth synth --n {n}`"
    )
    lines = [
        f"- {made}; {human(size)} on disk ({size / n / 1e3:.1f} kB per row)",
        f"- streamed all {seen:,} rows at 192 px (inputs and targets; 2 workers, batches of 64) "
        f"in {pass_s / 60:.1f} min: {seen / pass_s:,.0f} rows/s; peak RSS of the process and "
        f"its workers {human(rss.peak)}; disk used beyond the dataset {human(max(0, extra))}",
    ]
    return lines, plan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--scale-rows", type=int, default=100_000)
    parser.add_argument("--scale-data", type=Path, default=None, help="a dataset made before")
    args = parser.parse_args(argv)
    n = 60 if args.smoke else args.n
    sizes = [64] if args.smoke else [64, 96, 192]
    samples = {64: 16, 96: 16, 192: 16} if args.smoke else {64: 480, 96: 240, 192: 96}
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["FGDEPTH_CACHE"] = str(tmp / "cache")
        rows = throughput(tmp, n, sizes, 0.5 if args.smoke else 5.0, samples)
        scale = None
        if args.scale_rows:
            rows_ = 60 if args.smoke else args.scale_rows
            scale = scale_run(tmp, rows_, 0 if args.smoke else 2, args.scale_data)
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    precision = resolve_precision(load_config("default").precision, torch.device("cpu"))
    body = [
        "## Streaming against the cache, and the original scale",
        "",
        f"Machine: {machine()}; training in {precision}, {threads} threads.",
        f"Command: `python benchmarks/stream.py --n {n} --scale-rows {args.scale_rows}"
        + (" --scale-data DATASET`." if args.scale_data else "`."),
        "",
        f"Part 1: a {n:,}-row built-in dataset at 192 px, the default model (inputs at twice "
        "the output size, read at 192 px at most). Loader columns: rows/s of random batches of "
        "16, decoded by the stream's workers or read from the cache. Model: training samples/s "
        "on random inputs (no loader). Last columns: training samples/s of `fit` itself, epochs "
        f"of {samples[64]}/{samples[96]}/{samples[192]} rows at 64/96/192 px, its data "
        "cached (decoded before, 2 workers) or streamed (1 worker, sharing the 2 cores with "
        "training); the mean of epochs 2 to 4, so that a stream's worker start is not counted "
        "(between epochs of one run, the rate varies by up to about 10 % here).",
        "",
        table(
            [
                "size px",
                "inputs px",
                "stream, 1 worker",
                "stream, 2 workers",
                "cache",
                "model",
                "fit, cache",
                "fit, stream",
                "stream vs cache",
            ],
            rows,
        ),  # fmt: skip
    ]
    if scale:
        lines, plan = scale
        body += ["", "Part 2, the scale run:", "", *lines, "",
                 "`fgdepth train --config default --profile full --plan --plan-steps 2`: the "
                 "original scale on the built-in data (400K rows, described without being "
                 "generated), the modes that `data.cache: auto` picks for this machine's free "
                 "disk, and each epoch's training time from 2 timed steps:", "", "```",
                 plan.strip(), "```"]  # fmt: skip
    publish("stream", "\n".join(body), write=not args.smoke)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
