"""Depth in metres: how a dataset's stored depth values map to distances.

A depth map stores d in [0, 1], brighter = nearer: d = 1 at ``near`` and d = 0 at ``far``
(metres along the camera axis). The encoding says how d runs between them:

- ``linear``:  z = far - d (far - near)
- ``inverse``: 1/z = 1/far + d (1/near - 1/far)   (disparity-like: fine steps near the camera)
- ``log``:     log z = log far - d (log far - log near)

A dataset declares its encoding in ``dataset.yaml`` (``depth: {encoding: log, near: 1, far:
40}``); without one, depth stays in 0..1 units.

>>> enc = parse({"encoding": "log", "near": 1, "far": 40})
>>> str(enc), float(enc.to_metres(1.0)), round(float(enc.to_metres(0.5)), 3)
('log 1-40 m', 1.0, 6.325)
>>> round(float(enc.to_unit(6.325)), 3)
0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import yaml

from fgdepth.errors import DataError

DATASET_YAML = "dataset.yaml"  # beside the manifest: what a dataset declares about itself
ENCODINGS = ("linear", "inverse", "log")
KEYS = ("encoding", "near", "far")


@dataclass(frozen=True)
class DepthEncoding:
    """How a stored depth d in [0, 1] (1 at ``near``, 0 at ``far``) maps to metres."""

    encoding: str  # one of ENCODINGS
    near: float  # metres at d = 1
    far: float  # metres at d = 0

    def to_metres(self, d):
        """Stored depth (a float, numpy array or tensor, in [0, 1]) -> metres, the same type.
        Plain arithmetic only, so that a tensor stays on its device."""
        near, far = self.near, self.far
        if self.encoding == "linear":
            return far - d * (far - near)
        if self.encoding == "inverse":
            return 1.0 / (1.0 / far + d * (1.0 / near - 1.0 / far))
        return far * (near / far) ** d  # log z = log far - d log(far / near)

    def to_unit(self, z):
        """Metres (a float or numpy array) -> the stored depth in [0, 1]: ``to_metres``'s
        inverse."""
        near, far = self.near, self.far
        if self.encoding == "linear":
            return (far - z) / (far - near)
        if self.encoding == "inverse":
            return (1.0 / z - 1.0 / far) / (1.0 / near - 1.0 / far)
        return np.log(far / z) / math.log(far / near)

    def to_dict(self) -> dict:
        """As ``dataset.yaml``'s ``depth`` mapping (what ``parse`` reads back)."""
        return {"encoding": self.encoding, "near": self.near, "far": self.far}

    def __str__(self) -> str:
        return f"{self.encoding} {self.near:g}-{self.far:g} m"


def _metres(data: dict, key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DataError(f"depth.{key}: expected a distance in metres, got {value!r}")
    return float(value)


def parse(data) -> DepthEncoding:
    """``dataset.yaml``'s ``depth`` mapping -> DepthEncoding; DataError (one line) when it is
    not ``{encoding: linear|inverse|log, near: METRES, far: METRES}`` with near < far (and
    near > 0 for inverse and log, which divide by it or take its log)."""
    if not isinstance(data, dict):
        raise DataError(f"depth: expected a mapping of {', '.join(KEYS)}, got {data!r}")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise DataError(f"depth: unknown key '{unknown[0]}'; valid: {', '.join(KEYS)}")
    encoding = data.get("encoding")
    if encoding not in ENCODINGS:
        raise DataError(f"depth.encoding: {encoding!r} is not one of {', '.join(ENCODINGS)}")
    near, far = _metres(data, "near"), _metres(data, "far")
    positive = encoding != "linear"
    if near < 0 or near >= far or (positive and near == 0):
        order = "0 < near < far" if positive else "0 <= near < far"
        raise DataError(f"depth: {encoding} needs {order} (got near {near:g}, far {far:g})")
    return DepthEncoding(encoding, near, far)


def read_declaration(text: bytes | str) -> DepthEncoding | None:
    """The depth encoding a ``dataset.yaml`` declares (None for a file that declares none);
    DataError (one line) for a file that is not YAML, or not ``{depth: {...}}``."""
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"not readable YAML ({first})") from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise DataError(f"expected a mapping with the key depth, got {data!r}")
    unknown = sorted(str(k) for k in data if k != "depth")
    if unknown:
        raise DataError(f"unknown key '{unknown[0]}'; valid: depth")
    return parse(data["depth"]) if "depth" in data else None
