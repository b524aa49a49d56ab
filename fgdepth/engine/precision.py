"""Mixed precision: bf16 autocast where the hardware does it natively, else fp32.

``precision: auto`` picks bf16 on a CPU with AMX (its bf16 tile units made training about 3x
faster than fp32 on the same cores), and fp32 on any other CPU: without AMX, oneDNN either
emulates bf16 (AVX2 only) or has only AVX512_BF16's dot products; on a 2-core Xeon with
AVX512_BF16 but no AMX the bf16 matmul peak was 138 against 233 GFLOP/s in fp32, and the
default model trained 19-35 % slower in bf16 at 64 and 192 px (13 % faster at 96 px; BENCHMARKS.md,
"Training throughput (CPU)"). On a GPU it picks AMP (bf16 where supported, else fp16). The
reason for the choice is given once, on the console.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

FAST_BF16 = ("amx_bf16",)  # the flags under which bf16 training beats fp32


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_precision(
    precision: str, device: torch.device, flags: set[str] | None = None
) -> tuple[str, str]:
    """The precision to train in, and why: ``auto`` resolved (see the module), else as given."""
    if precision != "auto":
        return precision, "as configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: the GPU supports bf16"
        return "fp16", "auto: the GPU lacks bf16"
    flags = cpu_flags() if flags is None else flags
    if set(FAST_BF16) & flags:
        return "bf16", "auto: the CPU has AMX bf16 units"
    if "avx512_bf16" in flags:
        return "fp32", "auto: the CPU has AVX512_BF16 but no AMX, where bf16 trains slower"
    return "fp32", "auto: the CPU has no native bf16 (no AVX512_BF16 or AMX)"


def resolve_precision(precision: str, device: torch.device) -> str:
    return choose_precision(precision, device)[0]


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
