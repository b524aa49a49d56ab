"""Mixed precision: bf16 autocast where the hardware does it natively, else fp32.

``precision: auto`` picks bf16 on a CPU whose instruction set has native bf16 arithmetic
(AVX512_BF16 or AMX-BF16: about 3x the fp32 speed of the same cores here), fp32 on any other
CPU (oneDNN would emulate bf16 there, slower than fp32), and AMP on a GPU (bf16 where it is
supported, else fp16). The reason for the choice is given once, on the console.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


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
    native = sorted(set(NATIVE_BF16) & (cpu_flags() if flags is None else flags))
    if native:
        return "bf16", f"auto: the CPU has native bf16 ({', '.join(native)})"
    return "fp32", "auto: the CPU has no native bf16 (no AVX512_BF16 or AMX)"


def resolve_precision(precision: str, device: torch.device) -> str:
    return choose_precision(precision, device)[0]


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
