"""Which profile a command trains at. Every command and entry point defaults to ``auto``:
``full`` (the original scale) where torch sees a GPU, ``cpu`` where it does not. The other
names are the profiles of ``experiments/profiles.yaml``; a run logs the profile it resolved
(``config.profile``: the run parameter ``profile`` and the tag ``fgdepth.profile``)."""

from __future__ import annotations

import os
import sys

AUTO = "auto"
PROFILES = ("smoke", "cpu", "full")
CHOICES = (AUTO, *PROFILES)  # what --profile accepts


def resolve_profile(profile: str | None = AUTO) -> str:
    """``profile`` as one of ``PROFILES``: ``auto`` (or None) is ``full`` with a GPU and
    ``cpu`` without, said on stderr (stdout may be JSON) by the process that owns the console."""
    if profile not in (None, AUTO):
        return profile
    import torch

    if torch.cuda.is_available():
        resolved, why = "full", f"GPU: {torch.cuda.get_device_name(0)}"
    else:
        resolved, why = "cpu", "no GPU"
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 only
        print(f"profile auto: {resolved} ({why})", file=sys.stderr, flush=True)
    return resolved
