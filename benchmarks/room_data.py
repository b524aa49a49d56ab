"""A third dataset family: indoor rooms whose floor is not one plane.

Rooms, ray-cast with numpy, written apart from the built-in generator
(``fgdepth/data/synth.py``) and the street scenes (``benchmarks/street_data.py``) and sharing
none of their code. A camera of random height (1.0-1.8 m), pitch, roll, yaw and focal length
(0.6-1.1 x the image width) stands in a box room (4-9 m wide, 5-11 m deep, 2.4-3.5 m high) whose
floor has several levels: one or two raised platforms (0.15-0.6 m), a staircase of 3-6 steps, a
ramp, and 2-6 pieces of furniture (low tables and benches, tall cabinets, crates), at 4:3
(240 x 180 px; the loader resizes it). Every surface shows a crop of a real photograph shipped
with scikit-learn and matplotlib, tinted and desaturated, mapped in the surface's own metric
coordinates (so it foreshortens with perspective) and shaded by orientation, a ceiling lamp and
distance.

Foregrounds of six kinds with very different real heights (cat, box, plant, chair, lamp,
person) are drawn as anti-aliased silhouettes standing on a walkable surface that the camera
sees 1-9 m away: the floor, a platform, a stair tread, the ramp or the top of a piece of
furniture. Neither where a foreground is in the image nor its size gives its distance; the
surface it stands on does. Between bg and fg_bg: a soft contact shadow, a small exposure change
(+-6 %), sensor noise and JPEG compression (quality 80-95), each drawn independently.

Depth is the camera-axis distance z of the rays' hits (a foreground carries the z of the point
it stands on, within +-1.5 % for its parts), stored as a 16-bit PNG, linear, brighter = nearer:
``value = round(65535 * clip(1 - z / 12 m, 0, 1))``, so a stored d in [0, 1] is
z = 12 (1 - d) metres.

    python benchmarks/room_data.py OUT [--n 12000] [--seed 2] [--workers 2] [--preview PNG]

The folder it writes is an ordinary dataset in the documented format: manifest.csv with fg_bg,
bg, mask, depth and bg_id (about 10 rows per background), plus kind, surface (what the
foreground stands on), fg_distance_m and fg_height_m, and a dataset.yaml that declares the depth
encoding (linear, 0 to 12 m); ``fgdepth data inspect OUT`` checks it.
The same seed gives the same bytes whatever ``--workers``. At the end it prints two floors of
the foreground distance error on the test split by background: a constant, and a 5-parameter fit
from the mask's lowest row and pixel height.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import math
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 240, 180
PER_BACKGROUND = 10
Z_FAR = 12.0  # metres at stored depth 0
RAYS = 2  # colour rays per pixel side (anti-aliasing); depth is cast at pixel centres
SUPER = 4  # supersampling of the drawn foreground: its mask is the covered fraction > 1/2
NEAR, FAR = 1.0, 9.0  # distances at which a foreground may stand
COLUMNS = ("fg_bg", "bg", "mask", "depth", "bg_id", "kind", "surface", "fg_distance_m",
           "fg_height_m")  # fmt: skip
KINDS = {  # real heights in metres
    "cat": (0.25, 0.35),
    "box": (0.3, 0.7),
    "plant": (0.4, 1.2),
    "chair": (0.8, 1.0),
    "lamp": (1.2, 1.7),
    "person": (1.5, 1.9),
}
SURFACES = ("floor", "platform", "stairs", "ramp", "furniture")  # where a foreground may stand
PHOTOS = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)

# --- photographs ----------------------------------------------------------------------------

_photos: list[np.ndarray] | None = None


def photo_paths() -> list[Path]:
    """The photographs, found inside the installed packages without importing them."""
    paths = []
    for package, rel in PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(f"{package} is not installed: its sample photographs are needed")
        paths.append(Path(spec.submodule_search_locations[0]) / rel)
    return paths


def photos() -> list[np.ndarray]:
    """(h, w, 3) float32 RGB in [0, 1], loaded once per process."""
    global _photos
    if _photos is None:
        _photos = [
            np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0 for p in photo_paths()
        ]
    return _photos


def _crop(rng, size_px: tuple[float, float]) -> np.ndarray:
    """A random crop of a random photograph, about ``size_px`` (w, h), clipped to the photo."""
    pics = photos()
    pic = pics[int(rng.integers(len(pics)))]
    ph, pw = pic.shape[:2]
    cw = int(np.clip(size_px[0], 8, pw))
    ch = int(np.clip(size_px[1], 8, ph))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    return pic[y0 : y0 + ch, x0 : x0 + cw]


def _texture(rng, tint, strength: float, saturation: float, size_px=None) -> np.ndarray:
    """A tinted, partly desaturated photo crop whose mean is ``tint``: the photo's detail with
    ``strength`` of its contrast."""
    if size_px is None:
        side = rng.uniform(40, 260)
        size_px = (side, side * rng.uniform(0.6, 1.4))
    crop = _crop(rng, size_px)
    grey = crop.mean(axis=2, keepdims=True)
    crop = grey + saturation * (crop - grey)
    norm = np.clip(crop / max(float(crop.mean()), 1e-3), 0, 2.5)
    return (np.asarray(tint, np.float32) * (1 - strength + strength * norm)).astype(np.float32)


def _mirror(k: np.ndarray, n: int) -> np.ndarray:
    """Indices tiled by mirroring (no seams between tiles)."""
    k = np.mod(k, 2 * n)
    return np.where(k < n, k, 2 * n - 1 - k)


def _palette(rng, family: str) -> np.ndarray:
    if family == "wall":
        base = rng.uniform(0.62, 0.95) * np.ones(3)
        return np.clip(base + rng.uniform(-0.12, 0.12, 3), 0.3, 1)
    if family == "ceiling":
        return np.clip(rng.uniform(0.82, 0.97) + rng.uniform(-0.03, 0.03, 3), 0, 1)
    if family == "floor":
        woods = [(0.55, 0.38, 0.22), (0.7, 0.55, 0.38), (0.35, 0.24, 0.16), (0.5, 0.5, 0.52),
                 (0.72, 0.7, 0.66), (0.3, 0.33, 0.4), (0.55, 0.25, 0.2)]  # fmt: skip
        return np.clip(np.array(woods[int(rng.integers(len(woods)))]) * rng.uniform(0.75, 1.2),
                       0, 1)  # fmt: skip
    colour = rng.uniform(0.15, 0.85, 3)
    grey = colour.mean()
    return grey + rng.uniform(0.2, 0.8) * (colour - grey)


# --- the camera -----------------------------------------------------------------------------


class Camera:
    """A pinhole camera: world x right, y up, z into the room. Rays have a unit component along
    the optical axis, so a hit's ray parameter is its camera-axis depth."""

    def __init__(self, origin, yaw: float, pitch: float, roll: float, f: float, cx, cy):
        self.origin = np.asarray(origin, np.float64)
        cp, sp, cy_, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
        fwd = np.array([sy * cp, -sp, cy_ * cp])  # pitch > 0 looks down
        right0 = np.array([cy_, 0.0, -sy])
        up0 = np.cross(fwd, right0)
        cr, sr = math.cos(roll), math.sin(roll)
        self.fwd, self.right, self.up = fwd, cr * right0 + sr * up0, -sr * right0 + cr * up0
        self.f, self.cx, self.cy = f, cx, cy
        self.params = {"yaw": yaw, "pitch": pitch, "roll": roll, "f": f, "cx": cx, "cy": cy}

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        xn, yn = (u - self.cx) / self.f, (v - self.cy) / self.f
        return self.fwd + xn[:, None] * self.right - yn[:, None] * self.up

    def project(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        q = np.asarray(p, np.float64) - self.origin
        x, y, z = q @ self.right, q @ self.up, q @ self.fwd
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.cx + self.f * x / z, self.cy - self.f * y / z, z


# --- the room: surfaces and convex solids ---------------------------------------------------


class Surface:
    """How one kind of face looks: a texture in metric coordinates, optional tiles and
    pictures; ``stand`` names it among SURFACES when a foreground may stand on it."""

    def __init__(self, tex: np.ndarray, metres: float, offset, stand: str | None = None,
                 tiles: float = 0.0, pictures=()):  # fmt: skip
        self.tex, self.per_px = tex, metres / tex.shape[1]
        self.offset, self.stand, self.tiles, self.pictures = offset, stand, tiles, list(pictures)

    def colour(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        th, tw = self.tex.shape[:2]
        i = _mirror(np.floor(b / self.per_px + self.offset[0]).astype(np.int64), th)
        j = _mirror(np.floor(a / self.per_px + self.offset[1]).astype(np.int64), tw)
        col = self.tex[i, j]
        if self.tiles > 0:
            fa, fb = np.mod(a / self.tiles, 1.0), np.mod(b / self.tiles, 1.0)
            edge = np.minimum(np.minimum(fa, 1 - fa), np.minimum(fb, 1 - fb)) * self.tiles
            col = col * np.where(edge < 0.012, 0.6, 1.0)[:, None]
        for a0, a1, b0, b1, pic in self.pictures:  # framed photographs on a wall
            inside = (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
            if not inside.any():
                continue
            ph, pw = pic.shape[:2]
            pa, pb = (a[inside] - a0) / (a1 - a0), (b[inside] - b0) / (b1 - b0)
            frame = (np.minimum(pa, 1 - pa) * (a1 - a0) < 0.035) | (
                np.minimum(pb, 1 - pb) * (b1 - b0) < 0.035
            )
            inner = pic[np.clip((pb * ph).astype(int), 0, ph - 1), np.clip((pa * pw).astype(int),
                        0, pw - 1)]  # fmt: skip
            col[inside] = np.where(frame[:, None], 0.12, inner)
        return col


class Solid:
    """A convex solid: the points p with n . p <= c for every face (n unit, outward)."""

    def __init__(self, normals, offsets, name: str, top: int, side: int):
        n = np.asarray(normals, np.float64)
        norm = np.linalg.norm(n, axis=1)
        self.n, self.c, self.name = n / norm[:, None], np.asarray(offsets) / norm, name
        # faces that face up are the top surface (tread, platform, ramp), the rest its sides
        self.surface = np.where(self.n[:, 1] > 0.7, top, side)

    def contains(self, p, margin: float = 0.0) -> bool:
        return bool(np.all(self.n @ p <= self.c + margin))

    def footprint(self) -> tuple[float, float, float, float]:
        """x0, x1, z0, z1 of the axis-aligned faces."""
        lims = {}
        for (nx, _, nz), c in zip(self.n, self.c, strict=True):
            if nx == -1:
                lims["x0"] = -c
            elif nx == 1:
                lims["x1"] = c
            elif nz == -1:
                lims["z0"] = -c
            elif nz == 1:
                lims["z1"] = c
        return lims["x0"], lims["x1"], lims["z0"], lims["z1"]


def _box(x0, x1, y0, y1, z0, z1, name, top, side) -> Solid:
    normals = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)]
    return Solid(normals, [-x0, x1, -y0, y1, -z0, z1], name, top, side)


def _ramp(x0, x1, z0, z1, height, axis: str, rising: int, top, side) -> Solid:
    """A wedge on the floor whose top climbs ``height`` along x or z (``rising`` +1 / -1)."""
    normals = [(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1)]
    offsets = [-x0, x1, 0.0, -z0, z1]
    lo, hi = (x0, x1) if axis == "x" else (z0, z1)
    g = height / (hi - lo)
    k = 0 if axis == "x" else 2
    n = [0.0, 1.0, 0.0]
    if rising > 0:  # y <= g (p - lo)
        n[k] = -g
        normals.append(tuple(n))
        offsets.append(-g * lo)
    else:  # y <= g (hi - p)
        n[k] = g
        normals.append(tuple(n))
        offsets.append(g * hi)
    return Solid(normals, offsets, "ramp", top, side)


def _overlaps(a, b, gap: float = 0.1) -> bool:
    return a[0] < b[1] + gap and b[0] < a[1] + gap and a[2] < b[3] + gap and b[2] < a[3] + gap


class Room:
    """The room's interior faces (left, right, floor, ceiling, front, back walls: surfaces 0-5),
    the solids inside it and the lights."""

    ROOM_N = np.array([(-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1)], float)

    def __init__(self, rng):
        self.width, self.depth = rng.uniform(4, 9), rng.uniform(5, 11)
        self.height = rng.uniform(2.4, 3.5)
        hw, D = self.width / 2, self.depth
        self.c = np.array([hw, hw, 0.0, self.height, 0.0, D])
        self.surfaces: list[Surface] = []
        wall_tex = self._tex(rng, "wall", strength=(0.15, 0.6), saturation=(0.0, 0.5))
        wall_m = rng.uniform(0.8, 3.0)
        accent = self._tex(rng, "wall", strength=(0.2, 0.7), saturation=(0.0, 0.6))
        for face in range(6):
            if face == 2:
                tex = self._tex(rng, "floor", strength=(0.3, 0.9), saturation=(0.0, 0.6))
                self._add(tex, rng.uniform(0.5, 2.5), rng, "floor",
                          tiles=rng.uniform(0.3, 0.9) * (rng.random() < 0.4))  # fmt: skip
            elif face == 3:
                self._add(self._tex(rng, "ceiling", (0.05, 0.25), (0.0, 0.2)), 2.0, rng)
            else:
                tex = accent if face == 5 and rng.random() < 0.4 else wall_tex
                self._add(tex, wall_m, rng, pictures=self._pictures(rng, face))
        self.solids: list[Solid] = []
        self._platforms(rng)
        self._stairs(rng)
        self._ramp(rng)
        self._furniture(rng)
        lamp_xz = rng.uniform(-0.5, 0.5) * self.width, rng.uniform(0.3, 0.8) * D
        self.lamp = np.array([lamp_xz[0], self.height - 0.1, lamp_xz[1]])
        sun = np.array([rng.uniform(-0.7, 0.7), 1.0, rng.uniform(-0.8, 0.4)])
        self.sun = sun / np.linalg.norm(sun)
        self.ambient = rng.uniform(0.45, 0.65)
        self.light_tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.06, 0.06, 3)

    def _tex(self, rng, family, strength, saturation) -> np.ndarray:
        return _texture(rng, _palette(rng, family), rng.uniform(*strength),
                        rng.uniform(*saturation))  # fmt: skip

    def _add(self, tex, metres, rng, stand=None, tiles=0.0, pictures=()) -> int:
        offset = rng.uniform(0, tex.shape[0]), rng.uniform(0, tex.shape[1])
        self.surfaces.append(Surface(tex, metres, offset, stand, tiles, pictures))
        return len(self.surfaces) - 1

    def _pictures(self, rng, face: int) -> list:
        if face == 4 or rng.random() < 0.5:  # none on the wall behind the camera
            return []
        out = []
        span = self.depth if face in (0, 1) else self.width
        start = 0.0 if face in (0, 1) else -self.width / 2
        for _ in range(int(rng.integers(1, 3))):
            pw, ph = rng.uniform(0.4, 1.4), rng.uniform(0.3, 1.0)
            a0 = start + rng.uniform(0.3, max(0.4, span - pw - 0.3))
            y0 = rng.uniform(0.9, max(1.0, self.height - ph - 0.2))
            pic = _crop(rng, (rng.uniform(80, 400), rng.uniform(80, 400)))
            out.append((a0, a0 + pw, -(y0 + ph), -y0, pic))  # b is -y on walls
        return out

    def _top_side(self, rng, stand: str, family: str = "any") -> tuple[int, int]:
        tex = self._tex(rng, family, (0.2, 0.9), (0.0, 0.7))
        top = self._add(tex, rng.uniform(0.4, 2.0), rng, stand,
                        tiles=rng.uniform(0.25, 0.7) * (rng.random() < 0.25))  # fmt: skip
        side_tex = tex * rng.uniform(0.6, 1.0) if rng.random() < 0.6 else self._tex(
            rng, "any", (0.2, 0.8), (0.0, 0.6))  # fmt: skip
        return top, self._add(side_tex, rng.uniform(0.4, 2.0), rng)

    def _free(self, rect) -> bool:
        return all(not _overlaps(rect, s.footprint()) for s in self.solids if s.name != "platform")

    def _platforms(self, rng) -> None:
        hw, D = self.width / 2, self.depth
        for _ in range(int(rng.integers(1, 3))):
            h = rng.uniform(0.15, 0.6)
            top, side = self._top_side(rng, "platform", "floor")
            where = rng.choice(["back", "left", "right", "island"])
            if where == "back":
                w = rng.uniform(1.5, self.width)
                x0 = rng.uniform(-hw, hw - w)
                z0 = D - rng.uniform(1.0, min(3.5, D - 2.5))
                rect = (x0, x0 + w, z0, D)
            elif where in ("left", "right"):
                w = rng.uniform(1.0, min(2.5, hw))
                z0 = rng.uniform(1.8, D - 2.0)
                z1 = min(D, z0 + rng.uniform(1.5, 5.0))
                x0 = -hw if where == "left" else hw - w
                rect = (x0, x0 + w, z0, z1)
            else:
                w, d = rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0)
                x0 = rng.uniform(-hw, hw - w)
                z0 = rng.uniform(2.0, max(2.1, D - d))
                rect = (x0, x0 + w, z0, min(D, z0 + d))
            self.solids.append(_box(rect[0], rect[1], 0.0, h, rect[2], rect[3], "platform",
                                    top, side))  # fmt: skip

    def _stairs(self, rng) -> None:
        hw, D = self.width / 2, self.depth
        steps = int(rng.integers(3, 7))
        rise, run = rng.uniform(0.12, 0.21), rng.uniform(0.25, 0.4)
        width = rng.uniform(0.8, 1.8)
        top, side = self._top_side(rng, "stairs", "floor" if rng.random() < 0.5 else "any")
        landing = rng.uniform(0.4, 1.5)
        along = steps * run + landing
        if rng.random() < 0.6 and D - along > 2.0:  # rising toward the back, along a side wall
            x0 = -hw if rng.random() < 0.5 else hw - width
            z_start = rng.uniform(1.8, D - along)
            z_end = min(D, z_start + along)
            for i in range(steps):
                self.solids.append(_box(x0, x0 + width, 0.0, (i + 1) * rise,
                                        z_start + i * run, z_end, "stairs", top, side))  # fmt: skip
        else:  # rising toward a side wall, against the back wall
            along = min(along, self.width - 0.5)
            z0 = D - width
            sign = 1 if rng.random() < 0.5 else -1
            wall = hw if sign > 0 else -hw
            x_start = wall - sign * along
            for i in range(steps):
                xs = x_start + sign * i * run
                x0, x1 = (xs, wall) if sign > 0 else (wall, xs)
                self.solids.append(_box(x0, x1, 0.0, (i + 1) * rise, z0, D, "stairs", top, side))

    def _ramp(self, rng) -> None:
        hw, D = self.width / 2, self.depth
        top, side = self._top_side(rng, "ramp")
        for _ in range(20):
            axis = "z" if rng.random() < 0.6 else "x"
            w, length = rng.uniform(0.8, 2.0), rng.uniform(1.2, 3.5)
            sx, sz = (w, length) if axis == "z" else (length, w)
            if sx > self.width - 0.2 or sz > D - 2.0:
                continue
            x0, z0 = rng.uniform(-hw, hw - sx), rng.uniform(1.8, D - sz)
            rect = (x0, x0 + sx, z0, z0 + sz)
            if self._free(rect):
                height = rng.uniform(0.15, 0.6)
                rising = 1 if rng.random() < 0.7 else -1
                self.solids.append(_ramp(*rect, height, axis, rising, top, side))
                return

    def _furniture(self, rng) -> None:
        hw, D = self.width / 2, self.depth
        for _ in range(int(rng.integers(2, 7))):
            kind = rng.choice(["table", "bench", "cabinet", "crate"])
            w, d, h = {
                "table": (rng.uniform(0.8, 1.8), rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.8)),
                "bench": (rng.uniform(1.2, 2.2), rng.uniform(0.5, 0.9), rng.uniform(0.35, 0.5)),
                "cabinet": (rng.uniform(0.4, 1.2), rng.uniform(0.35, 0.6), rng.uniform(1.1, 2.2)),
                "crate": (rng.uniform(0.35, 0.8), rng.uniform(0.35, 0.8), rng.uniform(0.3, 0.8)),
            }[kind]
            if rng.random() < 0.5:
                w, d = d, w
            top, side = self._top_side(rng, "furniture")
            for _ in range(15):
                if kind == "cabinet" and rng.random() < 0.7:  # against a wall
                    x0 = -hw if rng.random() < 0.5 else hw - w
                else:
                    x0 = rng.uniform(-hw, hw - w)
                z0 = rng.uniform(1.8, max(1.9, D - d))
                rect = (x0, x0 + w, z0, min(D, z0 + d))
                if self._free(rect):
                    self.solids.append(_box(x0, x0 + w, 0.0, h, z0, rect[3], "furniture",
                                            top, side))  # fmt: skip
                    break

    # --- casting and shading ---

    def cast(self, cam: Camera, u: np.ndarray, v: np.ndarray):
        """Nearest hits of the rays through pixel positions (u, v): camera-axis depth t,
        surface index, unit normal toward the camera side, and the world point."""
        d = cam.rays(u, v)
        o = cam.origin
        rows = np.arange(len(d))
        nd = d @ self.ROOM_N.T
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = np.where(nd > 1e-12, (self.c - self.ROOM_N @ o) / nd, np.inf)
        face = tt.argmin(axis=1)
        t, surface = tt[rows, face], face.copy()
        normal = -self.ROOM_N[face]
        for solid in self.solids:  # a ray enters a convex solid through its last entering face
            t_in = np.full(len(d), -np.inf)
            t_out = np.full(len(d), np.inf)
            k_in = np.zeros(len(d), np.int64)
            for k, (n, c) in enumerate(zip(solid.n, solid.c, strict=True)):
                nd = d @ n
                num = c - n @ o
                with np.errstate(divide="ignore", invalid="ignore"):
                    tk = num / nd
                later = (nd < -1e-12) & (tk > t_in)
                t_in[later], k_in[later] = tk[later], k
                t_out = np.where(nd > 1e-12, np.minimum(t_out, tk), t_out)
                if num < 0:  # outside this face's plane: rays parallel to it miss
                    t_out[np.abs(nd) <= 1e-12] = -np.inf
            hit = (t_in <= t_out) & (t_in > 1e-4) & (t_in < t)
            k = k_in[hit]
            t[hit], surface[hit], normal[hit] = t_in[hit], solid.surface[k], solid.n[k]
        return t, surface, normal, o + t[:, None] * d

    def light(self, p: np.ndarray, normal: np.ndarray, t: np.ndarray) -> np.ndarray:
        diffuse = np.clip(normal @ self.sun, 0, 1)
        lamp = np.linalg.norm(p - self.lamp, axis=-1)
        s = (self.ambient + (1 - self.ambient) * diffuse) * (0.75 + 0.5 / (1 + (lamp / 3) ** 2))
        return s / (1 + 0.03 * t)

    def shade(self, t, surface, normal, p) -> np.ndarray:
        rgb = np.zeros((len(t), 3), np.float32)
        ax = np.abs(normal)
        flat = ax[:, 1] >= np.maximum(ax[:, 0], ax[:, 2])
        xside = ~flat & (ax[:, 0] >= ax[:, 2])
        a = np.where(flat | ~xside, p[:, 0], p[:, 2])
        b = np.where(flat, p[:, 2], -p[:, 1])  # -y: pictures stand upright on walls
        for s in np.unique(surface):
            sel = surface == s
            rgb[sel] = self.surfaces[s].colour(a[sel], b[sel])
        # darker corners where the room's faces meet
        hw = self.width / 2
        to_wall = np.minimum(np.minimum(hw - np.abs(p[:, 0]), self.depth - p[:, 2]), p[:, 2])
        to_edge = np.where(surface < 6, np.where(flat, to_wall, np.minimum(
            p[:, 1], self.height - p[:, 1])), 9.0)  # fmt: skip
        occlusion = 1 - 0.3 * np.exp(-np.clip(to_edge, 0, None) / 0.25)
        shade = self.light(p, normal, t) * occlusion
        return rgb * shade[:, None] * self.light_tint


def background_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of background ``index``: everything about it and its composites."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def scene(rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """One room: colour (H, W, 3) float in [0, 1], camera-axis depth (H, W) in metres, and an
    info dict: ``room``, ``camera``, ``stand`` ((H, W) index into SURFACES where a foreground
    may stand at that pixel's centre, else -1) and ``points`` ((H, W, 3) world hits)."""
    for _ in range(50):
        room = Room(rng)
        hw = room.width / 2
        origin = (rng.uniform(-0.7, 0.7) * (hw - 0.5), rng.uniform(1.0, 1.8),
                  rng.uniform(0.2, 1.0))  # fmt: skip
        if not any(s.contains(np.array(origin), 0.2) for s in room.solids):
            break
    cam = Camera(
        origin,
        yaw=rng.uniform(-0.35, 0.35),
        pitch=rng.uniform(-0.05, 0.35),
        roll=rng.uniform(-0.04, 0.04),
        f=W * rng.uniform(0.6, 1.1),
        cx=W / 2 + rng.uniform(-6, 6),
        cy=H / 2 + rng.uniform(-5, 5),
    )
    # colour: RAYS x RAYS rays per pixel, averaged
    offs = (np.arange(RAYS) + 0.5) / RAYS
    us = (np.arange(W)[:, None] + offs[None]).ravel()
    vs = (np.arange(H)[:, None] + offs[None]).ravel()
    u, v = np.meshgrid(us, vs)
    rgb = room.shade(*room.cast(cam, u.ravel(), v.ravel()))
    rgb = rgb.reshape(H, RAYS, W, RAYS, 3).mean(axis=(1, 3))
    ys, xs = np.mgrid[0:H, 0:W]
    vignette = 1 - 0.18 * (((xs - W / 2) / W) ** 2 + ((ys - H / 2) / H) ** 2) * 2
    exposure = float(np.clip(0.85 / max(np.percentile(rgb, 95), 1e-3), 0.8, 1.8))
    rgb = np.clip(rgb * vignette[..., None] * exposure, 0, 1)
    # depth and what may be stood on: at pixel centres
    t, surface, normal, p = room.cast(cam, xs.ravel() + 0.5, ys.ravel() + 0.5)
    names = {name: i for i, name in enumerate(SURFACES)}
    stand_of = np.array([names.get(s.stand, -1) for s in room.surfaces])
    stand = np.where(normal[:, 1] > 0.7, stand_of[surface], -1)
    info = {"room": room, "camera": cam, "stand": stand.reshape(H, W),
            "points": p.reshape(H, W, 3), "exposure": exposure}  # fmt: skip
    return rgb.astype(np.float32), t.reshape(H, W).astype(np.float32), info


# --- foregrounds ----------------------------------------------------------------------------


def _ellipse(cx, cy, rx, ry, n: int = 20) -> list:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return list(zip(cx + rx * np.cos(a), cy + ry * np.sin(a), strict=True))


def _rect(x0, x1, y0, y1) -> list:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _person(rng, h):
    r = 0.065 * h
    spread, swing = rng.uniform(0, 0.05) * h, rng.uniform(-0.04, 0.04, 2) * h
    parts = []
    for i, s in enumerate((-1, 1)):
        inner, outer = s * (0.025 * h + spread), s * (0.085 * h + spread)
        parts.append((1, [(s * 0.01 * h, 0.53 * h), (s * 0.095 * h, 0.53 * h),
                          (outer, 0), (inner, 0)]))  # fmt: skip
        parts.append((2, [(s * 0.12 * h, 0.82 * h), (s * 0.165 * h, 0.8 * h),
                          (s * 0.16 * h + swing[i], 0.47 * h),
                          (s * 0.125 * h + swing[i], 0.47 * h)]))  # fmt: skip
    parts.append((2, [(-0.13 * h, 0.83 * h), (0.13 * h, 0.83 * h), (0.105 * h, 0.5 * h),
                      (-0.105 * h, 0.5 * h)]))  # fmt: skip
    parts.append((3, _rect(-0.025 * h, 0.025 * h, 0.8 * h, h - 1.6 * r)))
    parts.append((3, _ellipse(0, h - r, 0.85 * r, r)))
    parts.append((4, _ellipse(0, h - 0.55 * r, 0.88 * r, 0.55 * r)))
    skins = [(0.95, 0.78, 0.65), (0.8, 0.6, 0.45), (0.55, 0.38, 0.26), (0.35, 0.24, 0.17)]
    tints = {1: rng.uniform(0.08, 0.5, 3), 2: rng.uniform(0.15, 0.95, 3),
             3: np.array(skins[int(rng.integers(len(skins)))]), 4: rng.uniform(0.05, 0.5) *
             np.array([1.0, 0.85, 0.7])}  # fmt: skip
    return parts, tints, 0.25


def _chair(rng, h):
    seat = min(rng.uniform(0.42, 0.5), 0.6 * h)
    half, t, leg = rng.uniform(0.2, 0.26), 0.045, 0.022
    parts = [(1, _rect(s * (half - leg) - leg, s * (half - leg) + leg, 0, seat)) for s in (-1, 1)]
    parts.append((2, _rect(-half, half, seat, seat + t)))
    if rng.random() < 0.5:  # from the side: the back is a post at one end
        parts.append((1, _rect(-half, -half + 2 * leg, seat, h)))
        parts.append((1, _rect(-half, -half + 0.05, seat + 0.18, h)))
    else:  # from the front: two posts and a panel
        for s in (-1, 1):
            parts.append((1, _rect(s * (half - leg) - leg, s * (half - leg) + leg, seat, h)))
        parts.append((2, _rect(-half + 0.02, half - 0.02, seat + 0.2, h)))
    wood = np.array([0.55, 0.38, 0.22]) * rng.uniform(0.5, 1.3)
    tints = {1: np.clip(wood, 0, 1) if rng.random() < 0.6 else rng.uniform(0.05, 0.9, 3),
             2: rng.uniform(0.1, 0.9, 3)}  # fmt: skip
    return parts, tints, half * 1.1


def _cat(rng, h):
    L = h * rng.uniform(1.5, 1.9)
    parts = [(1, _rect(x - 0.025 * L, x + 0.025 * L, 0, 0.5 * h))
             for x in (-0.3 * L, -0.18 * L, 0.18 * L, 0.3 * L)]  # fmt: skip
    parts.append((1, _ellipse(0, 0.5 * h, 0.38 * L, 0.2 * h)))
    hx = 0.42 * L
    parts.append((1, _ellipse(hx, 0.68 * h, 0.17 * h, 0.16 * h)))
    for s in (-1, 1):
        parts.append((1, [(hx + s * 0.14 * h, 0.76 * h), (hx + s * 0.02 * h, 0.8 * h),
                          (hx + s * 0.1 * h, h)]))  # fmt: skip
    parts.append((2, [(-0.34 * L, 0.56 * h), (-0.38 * L, 0.48 * h), (-0.6 * L, 0.82 * h),
                      (-0.56 * L, 0.9 * h)]))  # fmt: skip
    furs = [(0.9, 0.55, 0.25), (0.15, 0.14, 0.13), (0.85, 0.84, 0.8), (0.5, 0.44, 0.38)]
    fur = np.array(furs[int(rng.integers(len(furs)))])
    return parts, {1: fur, 2: fur * 0.85}, 0.4 * L


def _lamp(rng, h):
    bottom, top = rng.uniform(0.15, 0.22), rng.uniform(0.08, 0.13)
    pole = rng.uniform(0.012, 0.022)
    parts = [
        (1, _ellipse(0, 0.02, rng.uniform(0.12, 0.17), 0.02)),
        (1, _rect(-pole, pole, 0, 0.8 * h)),
        (2, [(-bottom, 0.76 * h), (bottom, 0.76 * h), (top, h), (-top, h)]),
    ]
    metal = rng.uniform(0.05, 0.7) * np.ones(3)
    shade = np.clip(np.array([0.95, 0.9, 0.75]) + rng.uniform(-0.25, 0.05, 3), 0, 1)
    return parts, {1: metal, 2: shade}, 0.17


def _crate(rng, h):
    w = min(0.8, h * rng.uniform(0.8, 1.5))
    parts = [(1, _rect(-w / 2, w / 2, 0, h)), (2, _rect(-w / 2, w / 2, 0.86 * h, h)),
             (3, _rect(-0.03, 0.03, 0.45 * h, h))]  # fmt: skip
    card = np.array([0.7, 0.53, 0.33]) * rng.uniform(0.7, 1.2)
    if rng.random() < 0.3:
        card = rng.uniform(0.1, 0.9, 3)
    return parts, {1: card, 2: card * 0.8, 3: np.array([0.8, 0.76, 0.62])}, w * 0.6


def _plant(rng, h):
    pot_h = h * rng.uniform(0.22, 0.35)
    th = min(rng.uniform(0.1, 0.18), 0.35 * h)
    bh = th * rng.uniform(0.65, 0.85)
    parts = [(1, [(-bh, 0), (bh, 0), (th, pot_h), (-th, pot_h)]),
             (1, _rect(-th * 1.08, th * 1.08, pot_h * 0.88, pot_h))]  # fmt: skip
    base = np.array([0.0, pot_h * 0.95])
    for i in range(int(rng.integers(5, 10))):
        a = rng.uniform(-0.15, 0.15) if i == 0 else rng.uniform(-1.0, 1.0)
        length = (h - pot_h) / math.cos(a) if i == 0 else (h - pot_h) * rng.uniform(0.5, 1.0)
        tip = base + length * np.array([math.sin(a), math.cos(a)])
        mid = base + 0.5 * (tip - base)
        perp = np.array([-math.cos(a), math.sin(a)]) * length * rng.uniform(0.08, 0.16)
        parts.append((2, [tuple(base), tuple(mid + perp), tuple(tip), tuple(mid - perp)]))
    pots = [(0.72, 0.4, 0.25), (0.85, 0.85, 0.82), (0.2, 0.2, 0.22), (0.4, 0.5, 0.6)]
    leaves = np.array([0.2, 0.5, 0.18]) * rng.uniform(0.6, 1.4) + rng.uniform(-0.05, 0.05, 3)
    return parts, {1: np.array(pots[int(rng.integers(len(pots)))]),
                   2: np.clip(leaves, 0, 1)}, th * 1.3  # fmt: skip


SHAPES = {"cat": _cat, "box": _crate, "plant": _plant, "chair": _chair, "lamp": _lamp,
          "person": _person}  # fmt: skip


def _draw(parts, foot, vdir, hdir) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (H, W) in [0, 1] and part index (H, W) of a silhouette given in metres
    (x across, y up from the contact point), drawn at SUPER x SUPER supersampling."""
    canvas = Image.new("L", (W * SUPER, H * SUPER), 0)
    draw = ImageDraw.Draw(canvas)
    for part, poly in parts:
        pts = [
            (SUPER * (foot[0] + y * vdir[0] + x * hdir[0]),
             SUPER * (foot[1] + y * vdir[1] + x * hdir[1]))
            for x, y in poly
        ]  # fmt: skip
        draw.polygon(pts, fill=part)
    ids = np.asarray(canvas).reshape(H, SUPER, W, SUPER)
    cover = (ids > 0).mean(axis=(1, 3))
    return cover, ids.max(axis=(1, 3))


def _composite(rng, bg: np.ndarray, depth: np.ndarray, info: dict):
    """fg_bg (float RGB), mask (bool), depth (metres) and the row's facts for one foreground
    standing on a visible walkable surface; None when none could be placed."""
    cam, room, stand, points = info["camera"], info["room"], info["stand"], info["points"]
    margin = np.zeros((H, W), bool)
    margin[12 : H - 2, 6 : W - 6] = True
    candidates = (stand >= 0) & (depth >= NEAR) & (depth <= FAR) & margin
    present = np.unique(stand[candidates])
    if len(present) == 0:
        return None
    for _ in range(60):
        kind = str(rng.choice(list(KINDS)))
        height = float(rng.uniform(*KINDS[kind]))
        where = int(rng.choice(present))  # each kind of surface as often as the others
        pixels = np.flatnonzero(candidates & (stand == where))
        i, j = divmod(int(rng.choice(pixels)), W)
        contact, z = points[i, j], float(depth[i, j])
        foot = np.array([j + 0.5, i + 0.5])
        tu, tv, tz = cam.project(contact + np.array([0.0, height, 0.0]))
        if not (tz > 0.3 and tv >= 1):
            continue
        vdir = (np.array([tu, tv]) - foot) / height  # image pixels per metre up
        if foot[1] - tv < 8:
            continue
        across = np.array([-vdir[1], vdir[0]]) / max(np.hypot(*vdir), 1e-9)
        hdir = across * cam.f / z * (1 if rng.random() < 0.5 else -1)  # pixels per metre across
        parts, tints, footprint = SHAPES[kind](rng, height)
        cover, ids = _draw(parts, foot, vdir, hdir)
        drawn = cover > 0.5
        if cover[:, [0, -1]].any() or cover[0].any():
            continue  # cut by the frame
        # the foreground hides the scene only where it is nearer (5 cm for the contact itself)
        seen = z < depth + 0.05
        mask = drawn & seen
        if mask.sum() < 20 or mask.sum() < 0.6 * drawn.sum():
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        if i - rows.max() > 2:
            continue  # the foot is not visible
        break
    else:
        return None
    offsets = rng.uniform(-0.015, 0.015, 8)  # parts sit a little in front of / behind z
    fg_depth = depth.copy()
    fg_depth[mask] = z * (1 + offsets[ids[mask]])
    # colour: a photo crop in each part's tint, lit like the scene at the contact point
    ys, xs = np.nonzero(cover > 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    bw, bh = x1 - x0, y1 - y0
    scale = rng.uniform(0.7, 3.0)
    tex = _texture(rng, (1, 1, 1), rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.6),
                   (bw * scale, bh * scale))  # fmt: skip
    tex = np.asarray(
        Image.fromarray((np.clip(tex / 2.5, 0, 1) * 255).astype(np.uint8)).resize(
            (bw, bh), Image.BILINEAR
        ),
        np.float32,
    ) * (2.5 / 255)
    palette = np.ones((256, 3), np.float32)
    shades = np.ones(256, np.float32)
    for part, tint in tints.items():
        palette[part], shades[part] = tint, rng.uniform(0.85, 1.1)
    local = ids[y0:y1, x0:x1]
    rgb = np.zeros((H, W, 3), np.float32)
    gy = np.linspace(1.08, 0.82, bh)[:, None]  # lighter toward the top
    side = rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, bw)[None, :]
    facing = -cam.fwd * np.array([1.0, 0.0, 1.0]) + np.array([0.0, 0.6, 0.0])
    facing /= np.linalg.norm(facing)
    light = room.light(contact[None], facing[None], np.array([z]))[0] * room.light_tint
    light = light * info["exposure"]
    rgb[y0:y1, x0:x1] = palette[local] * tex * (shades[local] * (gy + side))[..., None] * light
    rgb = np.clip(rgb, 0, 1)
    # contact shadow: a blurred ellipse on the ground around the contact point
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = contact + np.stack(
        [footprint * np.cos(angles), np.zeros(24), footprint * 0.8 * np.sin(angles)], axis=1
    )
    su, sv, sz = cam.project(ring)
    out = bg.copy()
    if np.all(sz > 0.2):
        shadow = Image.new("L", (W, H), 0)
        ImageDraw.Draw(shadow).polygon(list(zip(su, sv, strict=True)), fill=255)
        blur = max(0.8, 0.3 * footprint * cam.f / z)
        soft = np.asarray(shadow.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255
        near = np.abs(depth - z) < 0.3 + 0.05 * z
        out *= (1 - rng.uniform(0.3, 0.6) * soft * near)[..., None]
    alpha = (cover * seen)[..., None]
    out = out * (1 - alpha) + rgb * alpha
    facts = {"kind": kind, "surface": SURFACES[where], "fg_distance_m": z,
             "fg_height_m": height}  # fmt: skip
    return out, mask, fg_depth, facts


def stored_depth(z: np.ndarray) -> np.ndarray:
    """Metres -> the stored 16-bit values: linear, brighter = nearer, 0 at Z_FAR and beyond."""
    return np.round(65535 * np.clip(1 - np.asarray(z, np.float64) / Z_FAR, 0, 1)).astype(np.uint16)


def _jpeg(rgb: np.ndarray, rng, gain: float) -> bytes:
    noisy = rgb * gain + rng.normal(0, rng.uniform(0.005, 0.015), rgb.shape)
    img = Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(80, 96)))
    return buf.getvalue()


def _png(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    return buf.getvalue()


def _background_job(job: tuple) -> tuple[int, list[dict]]:
    out, index, seed, count = job
    rng = background_rng(seed, index)
    bg, depth, info = scene(rng)
    bg_name = f"bg/{index:05d}.jpg"
    (out / bg_name).write_bytes(_jpeg(bg, rng, 1.0))
    rows: list[dict] = []
    while len(rows) < count:
        made = _composite(rng, bg, depth, info)
        if made is None:  # nowhere to stand in this view: another view of a new room
            bg, depth, info = scene(rng)
            (out / bg_name).write_bytes(_jpeg(bg, rng, 1.0))
            rows = []
            continue
        fg_bg, mask, fg_depth, facts = made
        name = f"{index * PER_BACKGROUND + len(rows):06d}"
        (out / f"fg_bg/{name}.jpg").write_bytes(_jpeg(fg_bg, rng, 1 + rng.uniform(-0.06, 0.06)))
        (out / f"mask/{name}.png").write_bytes(_png((mask * 255).astype(np.uint8)))
        (out / f"depth/{name}.png").write_bytes(_png(stored_depth(fg_depth)))
        rows.append({
            "fg_bg": f"fg_bg/{name}.jpg", "bg": bg_name, "mask": f"mask/{name}.png",
            "depth": f"depth/{name}.png", "bg_id": str(index), "kind": facts["kind"],
            "surface": facts["surface"], "fg_distance_m": f"{facts['fg_distance_m']:.4f}",
            "fg_height_m": f"{facts['fg_height_m']:.3f}",
        })  # fmt: skip
    return index, rows


class _Progress:
    """Rows done / total with an ETA: tqdm when installed, else a line every few seconds."""

    def __init__(self, total: int, show: bool):
        self.total, self.done, self.show = total, 0, show
        self.start = self.last = time.monotonic()
        self.bar = None
        if show:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="row", desc="rooms", file=sys.stderr)
            except ImportError:
                pass

    def update(self, k: int) -> None:
        self.done += k
        if self.bar is not None:
            self.bar.update(k)
            return
        now = time.monotonic()
        if self.show and (now - self.last > 5 or self.done == self.total):
            self.last = now
            eta = (now - self.start) / self.done * (self.total - self.done)
            print(f"rooms: {self.done}/{self.total} rows, ETA {eta:.0f} s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write(out: Path, n: int = 12000, seed: int = 2, workers: int = 2, progress: bool = True):
    """Write ``n`` rows into the new or empty folder ``out`` (FileExistsError otherwise); the
    manifest comes last, so a folder without one is an interrupted generation."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty: give a new or empty folder")
    for sub in ("bg", "fg_bg", "mask", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [
        (out, i, seed, min(PER_BACKGROUND, n - i * PER_BACKGROUND))
        for i in range(math.ceil(n / PER_BACKGROUND))
    ]
    done: dict[int, list[dict]] = {}
    bar = _Progress(n, progress)
    try:
        if workers <= 1:
            for job in jobs:
                index, rows = _background_job(job)
                done[index] = rows
                bar.update(len(rows))
        else:
            with Pool(workers) as pool:
                for index, rows in pool.imap_unordered(_background_job, jobs):
                    done[index] = rows
                    bar.update(len(rows))
    finally:
        bar.close()
    tmp = out / "manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for index in sorted(done):
            writer.writerows(done[index])
    # the encoding in fgdepth's dataset.yaml, so that distances come out in metres
    (out / "dataset.yaml").write_text(f"depth: {{encoding: linear, near: 0, far: {Z_FAR:g}}}\n")
    os.replace(tmp, out / "manifest.csv")
    return out


# --- floors and preview ---------------------------------------------------------------------


def _read_rows(out: Path) -> list[dict]:
    with open(Path(out) / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def floors(out: Path) -> dict:
    """Two floors of the foreground distance error on the test split (by bg_id, the way
    fgdepth splits): mean |pred - true| of the foreground's median stored depth, for (a) the
    train median as a constant and (b) a least-squares fit of 5 parameters (intercept, b, h, b^2,
    b h) from the true mask's lowest row b and pixel height h, both / H. Also in metres."""
    import pandas as pd

    from fgdepth.data.splits import assign_splits

    out = Path(out)
    frame = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    split = assign_splits(frame)
    true, feats = [], []
    for row in frame.itertuples(index=False):
        mask = np.asarray(Image.open(out / row.mask)) > 127
        depth = np.asarray(Image.open(out / row.depth)).astype(np.float64) / 65535
        rows = np.flatnonzero(mask.any(axis=1))
        b, h = (rows.max() + 1) / H, (rows.max() - rows.min() + 1) / H
        true.append(float(np.median(depth[mask])))
        feats.append((1.0, b, h, b * b, b * h))
    true, feats = np.array(true), np.array(feats)
    train, test = split == "train", split == "test"
    if not train.any() or not test.any():
        raise ValueError(f"{out}: too few backgrounds for a train and a test split")
    constant = float(np.mean(np.abs(np.median(true[train]) - true[test])))
    coef = np.linalg.lstsq(feats[train], true[train], rcond=None)[0]
    fit = float(np.mean(np.abs(feats[test] @ coef - true[test])))
    return {
        "train_rows": int(train.sum()),
        "test_rows": int(test.sum()),
        "constant": constant,
        "fit": fit,
        "constant_m": constant * Z_FAR,
        "fit_m": fit * Z_FAR,
        "fit_over_constant": fit / constant if constant else float("nan"),
    }


def preview(out: Path, dest: Path, count: int = 6) -> None:
    """A grid of ``count`` samples: fg_bg | mask | depth, a row each, with the row's facts."""
    out, rows = Path(out), _read_rows(out)
    pick = sorted(set(np.linspace(0, len(rows) - 1, count).round().astype(int).tolist()))
    pad, label = 3, 12
    grid = Image.new("RGB", (3 * W + 4 * pad, len(pick) * (H + label + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(grid)
    for r, k in enumerate(pick):
        row = rows[k]
        depth = np.asarray(Image.open(out / row["depth"])).astype(np.float64) / 65535
        tiles = [
            Image.open(out / row["fg_bg"]).convert("RGB"),
            Image.open(out / row["mask"]).convert("RGB"),
            Image.fromarray((depth * 255).round().astype(np.uint8)).convert("RGB"),
        ]
        top = pad + r * (H + label + pad)
        draw.text((pad, top), f"{row['fg_bg']}: {row['kind']} {float(row['fg_height_m']):.2f} m "
                  f"on {row['surface']} at {float(row['fg_distance_m']):.2f} m",
                  fill=(230, 230, 230))  # fmt: skip
        for c, tile in enumerate(tiles):
            grid.paste(tile, (pad + c * (W + pad), top + label))
    grid.save(dest)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=12000)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--preview", type=Path, help="also save a grid of 6 samples as PNG")
    args = p.parse_args(argv)
    if args.n < 1 or args.workers < 1:
        p.error("--n and --workers must be at least 1")
    start = time.monotonic()
    try:
        write(args.out, args.n, args.seed, args.workers)
    except FileExistsError as exc:
        print(f"room_data: {exc}", file=sys.stderr)
        return 2
    took = time.monotonic() - start
    print(f"{args.n} samples written to {args.out} in {took:.0f} s "
          f"({1000 * took / args.n:.1f} s per 1000 rows)")  # fmt: skip
    if args.preview:
        preview(args.out, args.preview)
        print(f"preview: {args.preview}")
    try:
        fl = floors(args.out)
    except ValueError as exc:
        print(f"no floors: {exc}")
        return 0
    print(
        f"distance floors on the test split by bg_id ({fl['test_rows']} rows; stored depth units,"
        f" metres): constant {fl['constant']:.4f} ({fl['constant_m']:.2f} m), 5-parameter fit"
        f" from mask bottom and height {fl['fit']:.4f} ({fl['fit_m']:.2f} m),"
        f" fit / constant {fl['fit_over_constant']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
