"""Mixed precision: bf16 autocast where it trains faster here, else fp32.

CPU flags do not decide whether bf16 pays. With AVX512_BF16 and no AMX, the default model
trained 19-35 % slower in bf16 than in fp32 at 64 and 192 px on a 2-core Intel Xeon
(BENCHMARKS.md, "Training throughput (CPU)"), and 25 % faster on an AMD EPYC (157 against 196
samples/s at 64 px, 16 against 19 at 192 px). So ``precision: auto`` on a CPU with native
bf16 (AVX512_BF16 or AMX) is measured: ``fit`` times a few training steps of the run's model
at its largest stage in fp32 and in bf16 autocast, and takes bf16 only if it is faster by
``MARGIN`` (a tie keeps the exact precision). The rates are cached per machine and model in
``cache_root() / "precision.json"``, so a machine measures a model once. A CPU without native
bf16 takes fp32 untimed: there bf16 is emulated and many times slower. Estimates (``fgdepth
train --plan``, a study's budget) time nothing: they take the cached measurement, else a
guess from the flags (bf16 with AMX). On a GPU ``auto`` is AMP (bf16 where supported, else
fp16). The reason for the choice is given once, on the console.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from fgdepth.config import Config, StageConfig
from fgdepth.data.cache import cache_root

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")  # flags under which bf16 is worth timing
MARGIN = 1.05  # bf16 must be this much faster: timings vary by a few percent
TIMED_STEPS = 4  # per timing, after the measure's own warm-up step
ROUNDS = 2  # each precision's best of two: a step slowed by another process counts once
CACHE_FILE = "precision.json"

# samples/s of a few training steps: (config, stage, device, precision, steps), as
# ``fgdepth.engine.timing.training_rate``
Measure = Callable[[Config, StageConfig, torch.device, str, int], float]

log = logging.getLogger("fgdepth")


def _cpuinfo(field: str) -> str | None:
    """The first value of ``field`` in /proc/cpuinfo (Linux); None where it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    return set((_cpuinfo("flags") or "").split())


def cpu_model() -> str:
    """The CPU's model name (Linux), e.g. "AMD EPYC 9B14"; "unknown" where it cannot be read."""
    return _cpuinfo("model name") or "unknown"


def choose_precision(
    precision: str, device: torch.device, flags: set[str] | None = None
) -> tuple[str, str]:
    """The precision to train in, and why, from the hardware alone (nothing is timed):
    ``auto`` is AMP on a GPU, fp32 on a CPU without native bf16, and on one with it a guess
    until a run measured it (``training_precision``): bf16 with AMX. Else as given."""
    if precision != "auto":
        return precision, "as configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp16", "auto: the GPU lacks bf16"
    flags = cpu_flags() if flags is None else flags
    if not set(NATIVE_BF16) & flags:
        return "fp32", (
            "auto: the CPU has no native bf16 (no AVX512_BF16 or AMX): emulated, bf16 would "
            "train many times slower"
        )
    if "amx_bf16" in flags:
        return "bf16", "auto: not measured yet; the CPU has AMX bf16 units"
    return "fp32", "auto: not measured yet; the CPU has AVX512_BF16 but no AMX"


def training_precision(
    config: Config,
    stages: Sequence[StageConfig],
    device: torch.device,
    measure: Measure | None = None,
    *,
    flags: set[str] | None = None,
    path: Path | None = None,
) -> tuple[str, str]:
    """``config.precision`` for a run of ``stages``, and why. ``auto`` on a CPU with native
    bf16 takes the faster of fp32 and bf16 as ``measure`` times them at the largest stage
    (see the module), or as cached in ``path`` (default: ``cache_root() / CACHE_FILE``) by an
    earlier run; without ``measure`` nothing is timed, and an uncached choice is
    ``choose_precision``'s guess. Torch's random generator is left as it was: a run is the
    same whether it measured or read the cache."""
    flags = cpu_flags() if flags is None else flags
    if config.precision != "auto" or device.type != "cpu" or not set(NATIVE_BF16) & flags:
        return choose_precision(config.precision, device, flags)
    stage = max(stages, key=lambda s: s.size)  # the slowest steps, where most time goes
    path = path or cache_root() / CACHE_FILE
    key = measurement_key(config, stage, flags)
    known = _read_cache(path)
    if _complete(known.get(key)):
        return _faster(known[key]["rates"], stage.size, cached=True)
    if measure is None:
        return choose_precision(config.precision, device, flags)
    rates = _measured_rates(measure, config, stage, device)
    _write_cache(path, {**known, key: {"of": measurement_of(config, stage, flags), "rates": rates}})
    return _faster(rates, stage.size, cached=False)


def resolve_precision(
    precision: str,
    device: torch.device,
    config: Config | None = None,
    stages: Sequence[StageConfig] = (),
) -> str:
    """``precision`` resolved without timing anything (plans, estimates, evaluation). Given
    the run's ``config`` and ``stages``, ``auto`` takes what a run measured on this machine
    (``training_precision``); else the flags' guess (``choose_precision``)."""
    if config is not None and stages and precision == config.precision:
        return training_precision(config, stages, device)[0]
    return choose_precision(precision, device)[0]


def measurement_of(config: Config, stage: StageConfig, flags: set[str]) -> dict:
    """What a measurement depends on: the machine, torch, the threads and the model's work."""
    return {
        "cpu": cpu_model(),
        "flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": config.model.name,
        "options": json.loads(json.dumps(config.model.options, sort_keys=True, default=repr)),
        "size": stage.size,
        "batch": stage.batch_size or config.batch_size,
        "freeze": sorted(stage.freeze),  # frozen groups skip their backward
        "channels_last": config.channels_last,
    }


def measurement_key(config: Config, stage: StageConfig, flags: set[str]) -> str:
    """The cache's key of ``measurement_of``: a digest of it."""
    of = json.dumps(measurement_of(config, stage, flags), sort_keys=True)
    return hashlib.sha256(of.encode()).hexdigest()[:24]


def _measured_rates(
    measure: Measure, config: Config, stage: StageConfig, device: torch.device
) -> dict[str, float]:
    """Each precision's best rate over ``ROUNDS`` alternating timings. bf16 goes first: what
    the first timing still pays once per process (allocator, thread pool) counts against it,
    and a tie keeps fp32. The timing draws from torch's random generator (a fresh model's
    initial weights): its state is put back, so that the run does not depend on it."""
    rates = {"bf16": 0.0, "fp32": 0.0}
    with torch.random.fork_rng(devices=[]):
        for _ in range(ROUNDS):
            for precision in rates:
                rate = measure(config, stage, device, precision, TIMED_STEPS)
                rates[precision] = max(rates[precision], rate)
    return rates


def _faster(rates: dict[str, float], size: int, cached: bool) -> tuple[str, str]:
    """bf16 where it beat fp32 by ``MARGIN``, else fp32; the reason names both rates."""
    choice = "bf16" if rates["bf16"] > MARGIN * rates["fp32"] else "fp32"
    other = "fp32" if choice == "bf16" else "bf16"
    reason = (
        f"auto: measured {rates[choice]:.1f} samples/s in {choice} against "
        f"{rates[other]:.1f} in {other} at {size} px"
    )
    if choice == "fp32" and rates["bf16"] > rates["fp32"]:
        reason += f", within {round((MARGIN - 1) * 100)} %: the exact one kept"
    return choice, reason + (" (cached)" if cached else "")


def _complete(entry) -> bool:
    """Whether a cache entry holds both rates (a hand-edited or older one may not)."""
    rates = entry.get("rates") if isinstance(entry, dict) else None
    return isinstance(rates, dict) and all(
        isinstance(rates.get(p), (int, float)) for p in ("fp32", "bf16")
    )


def _read_cache(path: Path) -> dict:
    """The cached measurements; none where the file is missing or unreadable (a corrupt one
    is measured again and rewritten)."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_cache(path: Path, known: dict) -> None:
    """Written whole and renamed into place, so that a reader never sees half a file. A cache
    that cannot be written costs a measurement next time, not the run."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not cache the precision's measurement in %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
