"""precision: auto: bf16 only where the CPU has AMX, with the reason."""

import pytest
import torch

from fgdepth.engine.precision import choose_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, "fp32"),  # an AVX2-only CPU (e.g. AMD EPYC): bf16 would be emulated
        ({"avx2", "avx512f", "avx512bw", "avx512vl"}, "fp32"),  # AVX-512 without bf16
        # AVX512_BF16's dot products alone: bf16 measured slower than fp32
        ({"avx512f", "avx512_bf16"}, "fp32"),
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16"),
        ({"avx2", "amx_bf16", "amx_tile"}, "bf16"),
    ],
)
def test_auto_picks_bf16_only_with_amx(flags, expected):
    precision, reason = choose_precision("auto", CPU, flags)
    assert precision == expected
    assert reason.startswith("auto: the CPU has")
    assert ("AMX bf16 units" in reason) == (expected == "bf16")


def test_a_configured_precision_is_kept():
    assert choose_precision("fp32", CPU, {"avx512_bf16"}) == ("fp32", "as configured")
