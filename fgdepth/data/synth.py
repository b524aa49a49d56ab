"""The built-in procedural dataset: people and objects standing in textured rooms.

Each background is a room seen by a pinhole camera (floor, back wall, side walls, sometimes a
ceiling) with exact per-pixel depth. Each composite places one foreground on the floor: an
articulated person-like figure (capsule limbs at random joint angles) or an object (ball, box,
bollard). Its image size and depth follow from where its feet stand. Between bg and fg_bg, as
in real captures, there are differences outside the mask: the cast shadow, a small
illumination change, independent sensor noise and independent JPEG compression.

Depth files store log depth, brighter = nearer: ``1 - log(z / Z_NEAR) / log(Z_FAR / Z_NEAR)``
with z the camera-axis distance in metres, as 16-bit PNG; ``dataset.yaml`` declares it
(``DEPTH_ENCODING``: log, 1 to 40 m).
"""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from fgdepth.config import SynthConfig
from fgdepth.data.disk import check_new_file, check_new_folder
from fgdepth.data.units import DATASET_YAML, DepthEncoding
from fgdepth.parallel import run_chunks

Z_NEAR, Z_FAR = 1.0, 40.0
DEPTH_ENCODING = DepthEncoding("log", Z_NEAR, Z_FAR)  # what depth_to_unit stores


def depth_to_unit(z: np.ndarray) -> np.ndarray:
    """Metric camera-axis depth -> the stored [0, 1] log depth (brighter = nearer), clipped
    to Z_NEAR..Z_FAR."""
    return np.clip(1.0 - np.log(z / Z_NEAR) / math.log(Z_FAR / Z_NEAR), 0.0, 1.0)


def dataset_yaml() -> bytes:
    """The generated dataset's ``dataset.yaml``: its depth encoding."""
    return yaml.safe_dump({"depth": DEPTH_ENCODING.to_dict()}, sort_keys=False).encode()


# --- the room and its camera ---------------------------------------------------------------


@dataclass
class Camera:
    f: float  # focal length in pixels
    cx: float
    cy: float
    height: float  # metres above the floor
    pitch: float  # radians, positive looks down

    def rays(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """World directions (..., 3) whose camera-axis component is 1 (so t = z-depth)."""
        xn, yn = (us - self.cx) / self.f, (vs - self.cy) / self.f
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        return np.stack([xn, -yn * c - s, -yn * s + c], axis=-1)

    def project(self, x, y, z):
        """World point(s) -> (u, v, camera z-depth)."""
        s, c = math.sin(self.pitch), math.cos(self.pitch)
        dy = y - self.height
        depth = -dy * s + z * c
        down = -dy * c - z * s
        return self.cx + self.f * x / depth, self.cy + self.f * down / depth, depth


def _value_noise(rng: np.random.Generator, cells: int = 24):
    grid = rng.random((cells, cells)).astype(np.float32)

    def sample(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
        x, y = (a / scale) % cells, (b / scale) % cells
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = x - x0, y - y0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        x1, y1 = (x0 + 1) % cells, (y0 + 1) % cells
        top = grid[y0, x0] * (1 - fx) + grid[y0, x1] * fx
        bottom = grid[y1, x0] * (1 - fx) + grid[y1, x1] * fx
        return top * (1 - fy) + bottom * fy

    return sample


def _random_colour(rng, lo=0.15, hi=0.9) -> np.ndarray:
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _surface_texture(rng: np.random.Generator, kind: str):
    """A function (a, b) -> (..., 3) colour, with a, b surface coordinates in metres."""
    noise = _value_noise(rng)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    grout = _random_colour(rng, 0.3, 0.8)
    s = rng.uniform(0.3, 1.2)
    fine = rng.uniform(0.05, 0.2)

    def tiles(a, b):
        ia, ib = np.floor(a / s), np.floor(b / s)
        pick = ((ia + ib) % 2)[..., None]
        col = c1 * (1 - pick) + c2 * pick
        line = ((a / s) % 1 < 0.04) | ((b / s) % 1 < 0.04)
        return np.where(line[..., None], grout, col)

    def planks(a, b):
        plank = np.floor(b / (s * 0.3))
        shade = 0.75 + 0.5 * ((np.sin(plank * 12.9898) * 43758.5453) % 1)
        grain = 0.85 + 0.15 * np.sin(a * 25 + 6 * noise(a, b, 0.5))
        return c1 * (shade * grain)[..., None]

    def bricks(a, b):
        row = np.floor(b / (s * 0.25))
        a2 = a + (row % 2) * s * 0.25
        mortar = ((b / (s * 0.25)) % 1 < 0.1) | ((a2 / (s * 0.5)) % 1 < 0.05)
        tone = 0.8 + 0.4 * noise(np.floor(a2 / (s * 0.5)) * 3.1, row * 1.7, 1.0)
        return np.where(mortar[..., None], grout, c1 * tone[..., None])

    def panels(a, b):
        # shop fronts / posters: random rectangles over a noisy plaster
        base = c1 * (0.8 + 0.3 * noise(a, b, 0.7))[..., None]
        ia, ib = np.floor(a / (2 * s)), np.floor(b / (1.5 * s))
        cell = (np.sin(ia * 7.13 + ib * 3.71) * 9173.1) % 1
        inside = ((a / (2 * s)) % 1 > 0.15) & ((a / (2 * s)) % 1 < 0.85)
        inside &= ((b / (1.5 * s)) % 1 > 0.2) & ((b / (1.5 * s)) % 1 < 0.8) & (cell > 0.45)
        poster = c2 * (0.6 + 0.8 * cell)[..., None]
        return np.where(inside[..., None], np.clip(poster, 0, 1), base)

    pattern = {"tiles": tiles, "planks": planks, "bricks": bricks, "panels": panels}[kind]

    def texture(a, b):
        grain = 0.9 + 0.2 * noise(a, b, fine)[..., None]
        return pattern(a, b) * grain

    return texture


@dataclass
class Room:
    camera: Camera
    left: float
    right: float
    back: float
    ceiling: float | None
    textures: dict
    light: np.ndarray  # world position of the main light
    light_dir: np.ndarray  # horizontal direction shadows are cast along (x, z)

    def trace(self, us, vs):
        """Per pixel: camera z-depth, surface id (0 floor, 1 back, 2 left, 3 right, 4 ceiling),
        and the hit point."""
        cam = self.camera
        d = cam.rays(us, vs)
        origin = np.array([0.0, cam.height, 0.0], dtype=np.float32)
        planes = [(1, 0.0), (2, self.back), (0, -self.left), (0, self.right)]
        if self.ceiling is not None:
            planes.append((1, self.ceiling))
        with np.errstate(divide="ignore", invalid="ignore"):
            ts = np.stack([(value - origin[axis]) / d[..., axis] for axis, value in planes])
        ts = np.where(ts > 1e-6, ts, np.inf)
        surface = np.argmin(ts, axis=0)
        t = np.take_along_axis(ts, surface[None], 0)[0]
        t = np.minimum(t, Z_FAR * 2)
        point = origin + d * t[..., None]
        return t, surface, point

    def colour(self, surface, point):
        x, y, z = point[..., 0], point[..., 1], point[..., 2]
        coords = {0: (x, z), 1: (x, y), 2: (z, y), 3: (z, y), 4: (x, z)}
        out = np.zeros(point.shape, np.float32)
        for sid, (a, b) in coords.items():
            sel = surface == sid
            if sel.any():
                out[sel] = self.textures[sid](a[sel], b[sel])
        to_light = self.light - point
        dist = np.linalg.norm(to_light, axis=-1)
        brightness = 0.55 + 0.6 * np.exp(-dist / 8.0)
        brightness *= np.select([surface == 0, surface == 4], [1.0, 0.85], 0.92)
        return np.clip(out * brightness[..., None], 0, 1)


def make_room(rng: np.random.Generator, size: int) -> Room:
    camera = Camera(
        f=size * rng.uniform(0.75, 1.25),
        cx=size / 2 + rng.uniform(-0.05, 0.05) * size,
        cy=size / 2 + rng.uniform(-0.05, 0.05) * size,
        height=rng.uniform(1.2, 2.4),
        pitch=math.radians(rng.uniform(0, 18)),
    )
    textures = {
        0: _surface_texture(rng, rng.choice(["tiles", "planks"])),
        1: _surface_texture(rng, rng.choice(["panels", "bricks", "panels"])),
        2: _surface_texture(rng, rng.choice(["panels", "bricks"])),
        3: _surface_texture(rng, rng.choice(["panels", "bricks"])),
        4: _surface_texture(rng, "tiles"),
    }
    angle = rng.uniform(0, 2 * math.pi)
    return Room(
        camera=camera,
        left=rng.uniform(2.5, 8),
        right=rng.uniform(2.5, 8),
        back=rng.uniform(10, 30),
        ceiling=rng.uniform(3, 6) if rng.random() < 0.6 else None,
        textures=textures,
        light=np.array([rng.uniform(-3, 3), 4.0, rng.uniform(2, 10)], np.float32),
        light_dir=np.array([math.cos(angle), abs(math.sin(angle)) * 0.8 + 0.2]),
    )


def render_room(room: Room, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean colour (S,S,3) float in [0,1] (2x supersampled), z-depth (S,S), surface ids."""
    ss = 2
    grid = (np.arange(size * ss, dtype=np.float32) + 0.5) / ss
    us, vs = np.meshgrid(grid, grid)
    _, surface, point = room.trace(us, vs)
    colour = room.colour(surface, point)
    colour = colour.reshape(size, ss, size, ss, 3).mean(axis=(1, 3))
    centres = np.arange(size, dtype=np.float32) + 0.5
    us, vs = np.meshgrid(centres, centres)
    z, surface, _ = room.trace(us, vs)
    return colour.astype(np.float32), z.astype(np.float32), surface


# --- foregrounds ---------------------------------------------------------------------------


@dataclass
class Part:
    """A tapered capsule in image space (pixels) with a colour function and a depth offset."""

    p0: np.ndarray
    p1: np.ndarray
    r0: float
    r1: float
    colour: np.ndarray
    dz: float = 0.0
    stripes: float = 0.0  # stripe frequency (per pixel), 0 for plain
    rect: bool = False  # an axis-aligned box: centre p0, half sizes (r0, r1)


def _capsule(u, v, part: Part):
    """Signed distance (pixels) to the part, distance to its axis, local radius, position."""
    if part.rect:
        du, dv = np.abs(u - part.p0[0]) - part.r0, np.abs(v - part.p0[1]) - part.r1
        sd = np.maximum(du, dv)
        return sd, np.abs(u - part.p0[0]) * 0.5, np.full_like(u, part.r0), (v - part.p0[1]) / 50
    d = part.p1 - part.p0
    length2 = float(d @ d) + 1e-9
    t = np.clip(((u - part.p0[0]) * d[0] + (v - part.p0[1]) * d[1]) / length2, 0, 1)
    px, py = part.p0[0] + t * d[0], part.p0[1] + t * d[1]
    radius = part.r0 + (part.r1 - part.r0) * t
    dist = np.hypot(u - px, v - py)
    return dist - radius, dist, radius, t


def _limb(root, angle, bend, l1, l2):
    """A limb of two segments (``l1``, ``l2`` metres) from ``root``: its middle and end."""
    a1 = angle
    a2 = angle + bend
    mid = root + l1 * np.array([math.sin(a1), -math.cos(a1)])
    end = mid + l2 * np.array([math.sin(a2), -math.cos(a2)])
    return mid, end


def _skeleton(rng, height):
    """A figure's pose in body metres (x right, y up, pelvis at the origin): its up and side
    directions, neck, head centre and limbs, each (kind, root, middle, end, toe or None)."""
    deg = np.radians
    lean = deg(rng.normal(0, 6))
    up = np.array([math.sin(lean), math.cos(lean)])
    torso = 0.3 * height
    neck = up * torso
    shoulder_w, hip_w = 0.12 * height, 0.06 * height
    side = np.array([up[1], -up[0]])
    joints = []
    leg = 0.47 * height
    for sgn in (-1, 1):
        hip = side * hip_w * sgn
        bend = deg(rng.uniform(0, 70)) * (1 if rng.random() < 0.5 else -1)
        knee, ankle = _limb(hip, deg(rng.uniform(-35, 35)), bend, leg * 0.52, leg * 0.48)
        toe = ankle + np.array([sgn * 0.03 + rng.uniform(-0.12, 0.12), -0.03])
        joints.append(("leg", hip, knee, ankle, toe))
    arm = 0.38 * height
    for sgn in (-1, 1):
        sh = neck + side * shoulder_w * sgn - up * 0.03
        elbow, wrist = _limb(
            sh, deg(rng.uniform(-160, 160)), deg(rng.uniform(-120, 120)), arm * 0.52, arm * 0.48
        )
        joints.append(("arm", sh, elbow, wrist, None))
    head_c = neck + up * 0.1 * height
    return up, side, neck, head_c, joints


def _limb_parts(rng, joints, px, r, palette, stripe) -> list[Part]:
    """Legs (trousers, shoes) and arms (sleeve or bare); one side nearer than the other."""
    skin, shirt, trousers = palette
    parts = []
    depth_sign = rng.choice([-1, 1])
    for kind, a, b, c, d in joints:
        dz = 0.12 * depth_sign * (1 if a[0] * depth_sign > 0 else -1)
        if kind == "leg":
            parts += [
                Part(px(a), px(b), 0.05 * r, 0.04 * r, trousers, dz),
                Part(px(b), px(c), 0.04 * r, 0.03 * r, trousers, dz),
                Part(px(c), px(d), 0.025 * r, 0.02 * r, skin * 0.5, dz),
            ]
        else:
            sleeve = shirt if rng.random() < 0.6 else skin
            parts += [
                Part(px(a), px(b), 0.035 * r, 0.03 * r, sleeve, dz * 1.5, stripe),
                Part(px(b), px(c), 0.03 * r, 0.025 * r, skin, dz * 1.5),
                Part(px(c), px(c), 0.03 * r, 0.03 * r, skin, dz * 1.5),
            ]
    return parts


def _body_parts(px, up, side, neck, head_c, r, palette, stripe) -> list[Part]:
    """Torso, neck, head and hair."""
    skin, shirt, _ = palette
    torso = Part(
        px(np.zeros(2) + up * 0.02), px(neck - up * 0.04), 0.1 * r, 0.12 * r, shirt, 0.0, stripe
    )
    hair = Part(
        px(head_c + up * 0.05 - side * 0.01),
        px(head_c + up * 0.03 + side * 0.02),
        0.05 * r,
        0.04 * r,
        palette[0] * 0.3,
        0.01,
    )
    return [
        torso,
        Part(px(neck), px(head_c - up * 0.02), 0.03 * r, 0.03 * r, skin, 0.0),
        Part(px(head_c), px(head_c + up * 0.015), 0.065 * r, 0.06 * r, skin, 0.0),
        hair,
    ]


def _figure_parts(rng, foot_u, foot_v, scale, palette) -> list[Part]:
    """An articulated person: metres -> pixels by ``scale``; feet at (foot_u, foot_v)."""
    height = rng.uniform(1.5, 1.95)
    up, side, neck, head_c, joints = _skeleton(rng, height)
    points = [p for j in joints for p in j[1:] if p is not None] + [head_c, neck]
    lowest = min(p[1] for p in points)
    foot_x = min((j for j in joints if j[0] == "leg"), key=lambda j: j[3][1])[3][0]

    def px(p):  # body metres -> image pixels
        return np.array([foot_u + (p[0] - foot_x) * scale, foot_v - (p[1] - lowest) * scale])

    r = scale * height
    stripe = rng.uniform(0.15, 0.5) if rng.random() < 0.5 else 0.0
    parts = _limb_parts(rng, joints, px, r, palette, stripe)
    return parts + _body_parts(px, up, side, neck, head_c, r, palette, stripe)


def _object_parts(rng, foot_u, foot_v, scale, palette) -> tuple[str, list[Part]]:
    colour = palette[1]
    kind = rng.choice(["ball", "box", "bollard"])
    if kind == "ball":
        radius = rng.uniform(0.12, 0.45) * scale
        centre = np.array([foot_u, foot_v - radius])
        return kind, [Part(centre, centre, radius, radius, colour, -0.2, rng.uniform(0, 0.3))]
    if kind == "bollard":
        h, w = rng.uniform(0.6, 1.3) * scale, rng.uniform(0.08, 0.2) * scale
        return kind, [
            Part(
                np.array([foot_u, foot_v - w]),
                np.array([foot_u, foot_v - h]),
                w,
                w * 0.9,
                colour,
                0.0,
                rng.uniform(0, 0.2),
            )
        ]
    # box: a front face and a darker side face
    h, w = rng.uniform(0.3, 1.0) * scale, rng.uniform(0.3, 1.0) * scale
    side = rng.uniform(0.15, 0.35) * w * rng.choice([-1, 1])
    centre = np.array([foot_u, foot_v - h / 2])
    flank = np.array([foot_u + w / 2 * np.sign(side) + side / 2, foot_v - h / 2 - abs(side) / 3])
    return kind, [
        Part(flank, flank, abs(side) / 2, h / 2, colour * 0.6, 0.15, rect=True),
        Part(centre, centre, w / 2, h / 2, colour, 0.0, rng.uniform(0, 0.15), rect=True),
    ]


def _palette(rng, room_colour: np.ndarray):
    """Skin, upper and lower colours; sometimes close to the background behind (camouflage)."""
    skin = np.array([0.87, 0.68, 0.55], np.float32) * rng.uniform(0.35, 1.05)
    if rng.random() < 0.25:
        near = np.clip(room_colour + rng.normal(0, 0.05, 3), 0, 1).astype(np.float32)
        return skin, near, np.clip(near * rng.uniform(0.8, 1.2), 0, 1)
    return skin, _random_colour(rng, 0.05, 0.95), _random_colour(rng, 0.05, 0.8)


def _render_parts(parts, size, z_foot, scale, foot_v, cam, rng):
    """Composite the parts back to front: colour (S,S,3), coverage (S,S), z (S,S)."""
    colour = np.zeros((size, size, 3), np.float32)
    cover = np.zeros((size, size), np.float32)
    z = np.full((size, size), np.inf, np.float32)
    s, c = math.sin(cam.pitch), math.cos(cam.pitch)
    texture = _value_noise(rng, 16)
    for part in sorted(parts, key=lambda p: -p.dz):
        reach = max(part.r0, part.r1) + 2
        lo = np.floor(np.minimum(part.p0, part.p1) - reach).astype(int)
        hi = np.ceil(np.maximum(part.p0, part.p1) + reach).astype(int)
        x0, y0 = max(lo[0], 0), max(lo[1], 0)
        x1, y1 = min(hi[0], size), min(hi[1], size)
        if x0 >= x1 or y0 >= y1:
            continue
        us, vs = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
        sd, dist, radius, t = _capsule(us, vs, part)
        alpha = np.clip(0.5 - sd, 0, 1).astype(np.float32)
        if not alpha.any():
            continue
        rel = np.clip(dist / np.maximum(radius, 1e-3), 0, 1)
        shade = 0.55 + 0.45 * np.sqrt(1 - rel**2)  # a lit cylinder
        tone = part.colour * (0.85 + 0.3 * texture(us, vs, max(2.0, scale * 0.04)))[..., None]
        if part.stripes:
            stripe = (np.sin(t * 40 * part.stripes + vs * part.stripes) > 0)[..., None]
            tone = np.where(stripe, tone, tone * 0.55 + 0.4 * part.colour[::-1])
        paint = np.clip(tone * shade[..., None], 0, 1)
        # metres above the feet -> camera z of that point (depth varies with height if pitched)
        above = (foot_v - vs) / scale
        bulge = np.sqrt(np.clip(radius**2 - dist**2, 0, None)) / scale
        pz = (z_foot + part.dz - bulge) * c - (above - cam.height) * s
        pz = pz.astype(np.float32)
        window = (slice(y0, y1), slice(x0, x1))
        a = alpha[..., None]
        colour[window] = colour[window] * (1 - a) + paint * a
        cover[window] = 1 - (1 - cover[window]) * (1 - alpha)
        solid = alpha >= 0.5
        z[window] = np.where(solid, np.minimum(z[window], pz), z[window])
    return colour, cover, z


def _shadow(cover, room: Room, foot_u, foot_v, scale, size, rng):
    """The figure's silhouette thrown along the floor away from the light, flattened."""
    vs, us = np.nonzero(cover > 0.3)
    shadow = np.zeros((size, size), np.float32)
    if len(us) == 0:
        return shadow
    above = (foot_v - vs + 0.5) / scale
    lx, lz = room.light_dir * rng.uniform(0.3, 0.9)
    du = (us + 0.5 - foot_u) + above * lx * scale
    dv = -above * lz * scale * 0.35
    su = np.clip(np.round(foot_u + du), 0, size - 1).astype(int)
    sv = np.clip(np.round(foot_v + dv), 0, size - 1).astype(int)
    np.add.at(shadow, (sv, su), 1.0)
    shadow = np.minimum(shadow, 1.0)
    k = max(1, int(scale * 0.04))
    return _box_blur(_box_blur(shadow, k), k)


def _box_blur(img, k):
    pad = np.pad(img, k, mode="edge")
    cs = np.cumsum(np.cumsum(pad, 0), 1)
    cs = np.pad(cs, ((1, 0), (1, 0)))
    n = 2 * k + 1
    h, w = img.shape
    return (cs[n : n + h, n : n + w] - cs[:h, n : n + w] - cs[n : n + h, :w] + cs[:h, :w]) / (n * n)


# --- samples and files ---------------------------------------------------------------------


def _to_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def _to_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _capture(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sensor noise then 8-bit quantisation."""
    sigma = rng.uniform(0.004, 0.015)
    noisy = clean + rng.standard_normal(clean.shape, dtype=np.float32) * sigma
    return (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_composite(room: Room, clean: np.ndarray, z_bg: np.ndarray, surface, size, rng):
    """One composite: fg_bg uint8, mask uint8 (0/255), depth uint16, metadata."""
    cam = room.camera
    for _ in range(20):  # find a floor spot in view, in front of the back wall
        z_foot = 1.4 + (min(room.back - 1.0, 9.0) - 1.4) * rng.random() ** 2
        x_foot = rng.uniform(-room.left + 0.5, room.right - 0.5)
        u, v, zc = cam.project(x_foot, 0.0, z_foot)
        if 0.1 * size < u < 0.9 * size and 0.35 * size < v < 1.02 * size:
            break
    scale = cam.f / zc  # pixels per metre at the feet
    room_colour = clean[int(np.clip(v - scale, 0, size - 1)), int(np.clip(u, 0, size - 1))]
    palette = _palette(rng, room_colour)
    if rng.random() < 0.75:
        kind, parts = "person", _figure_parts(rng, u, v, scale, palette)
    else:
        kind, parts = _object_parts(rng, u, v, scale, palette)
    colour, cover, z_fg = _render_parts(parts, size, z_foot, scale, v, cam, rng)
    cover = cover * ~(z_fg >= z_bg)  # a part behind the room (rare) stays hidden
    shadow = _shadow(cover, room, u, v, scale, size, rng) * (surface == 0)
    lit = clean * (1 - rng.uniform(0.3, 0.6) * shadow)[..., None]
    lit = lit * rng.uniform(0.94, 1.06) + rng.uniform(-0.02, 0.02, 3).astype(np.float32)
    a = cover[..., None]
    fg_bg = np.clip(lit * (1 - a) + colour * a, 0, 1)
    front = (cover >= 0.5) & (z_fg < z_bg)
    z = np.where(front, z_fg, z_bg)
    mask = (front * 255).astype(np.uint8)
    depth = (depth_to_unit(z) * 65535 + 0.5).astype(np.uint16)
    meta = {"kind": kind, "fg_distance_m": round(float(zc), 3)}
    return _capture(fg_bg, rng), mask, depth, meta


def _sample_files(index: int, bg_name: str) -> dict[str, str]:
    stem = f"{index // 1000:04d}/{index:07d}"
    return {
        "fg_bg": f"fg_bg/{stem}.jpg",
        "bg": bg_name,
        "mask": f"mask/{stem}.png",
        "depth": f"depth/{stem}.png",
    }


def _background_of(spec: SynthConfig, index: int) -> int:
    return index * spec.n_backgrounds // spec.n


_spec: list[SynthConfig] = []


def _set_spec(spec: SynthConfig) -> None:
    _spec[:] = [spec]


def _render_backgrounds(chunk: range) -> list[tuple[int, dict, dict]]:
    """Render backgrounds ``chunk`` and all their composites; returns files as bytes."""
    spec = _spec[0]
    out = []
    for b in chunk:
        rng = np.random.default_rng([spec.seed, 0, b])
        room = make_room(rng, spec.size)
        clean, z_bg, surface = render_room(room, spec.size)
        bg_name = f"bg/{b:05d}.jpg"
        bg_bytes = _to_jpeg(_capture(clean, rng), rng.integers(72, 96))
        first = -(-b * spec.n // spec.n_backgrounds)
        last = -(-(b + 1) * spec.n // spec.n_backgrounds)
        for i in range(first, last):
            srng = np.random.default_rng([spec.seed, 1, i])
            fg_bg, mask, depth, meta = make_composite(room, clean, z_bg, surface, spec.size, srng)
            names = _sample_files(i, bg_name)
            files = {
                names["fg_bg"]: _to_jpeg(fg_bg, srng.integers(72, 96)),
                names["mask"]: _to_png(mask),
                names["depth"]: _to_png(depth),
            }
            if i == first:
                files[bg_name] = bg_bytes
            row = {**names, "bg_id": f"{b:05d}", **meta}
            out.append((i, row, files))
    return out


PROGRESS = ".synth-progress"  # in a folder being generated: one record per finished background


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    for name in sorted(files):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[name])


def _same_spec(progress: Path, spec: SynthConfig) -> bool:
    """Whether ``progress`` is the record of an unfinished generation of ``spec``."""
    try:
        return json.loads((progress / "spec.json").read_text()) == asdict(spec)
    except (OSError, ValueError):
        return False


def _finished(progress: Path, spec: SynthConfig) -> dict[int, list[dict]]:
    """The backgrounds a killed generation finished, with their rows (a record is written
    after the background's files, so its files are whole)."""
    marker = progress / "spec.json"
    if not _same_spec(progress, spec):
        shutil.rmtree(progress, ignore_errors=True)  # another spec: start again
        progress.mkdir(parents=True)
        marker.write_text(json.dumps(asdict(spec)))
        return {}
    done = {}
    for record in progress.glob("b*.json"):
        done[int(record.stem[1:])] = json.loads(record.read_text())
    return done


def _generate_folder(spec: SynthConfig, out: Path, workers: int, quiet: bool) -> list[dict]:
    """Every background's files into ``out``, resuming after the backgrounds a killed run
    finished; returns the rows in order."""
    progress = out / PROGRESS
    out.mkdir(parents=True, exist_ok=True)
    done = _finished(progress, spec)
    todo = [b for b in range(spec.n_backgrounds) if b not in done]
    if done and not quiet:
        print(f"synth: resuming, {len(done)} of {spec.n_backgrounds} backgrounds already done")
    parts = run_chunks(
        _render_backgrounds, [range(b, b + 1) for b in todo], workers, desc="synth",
        quiet=quiet, setup=_set_spec, setup_args=(spec,),
        weights=[_bg_len(spec, b) for b in todo],
    )  # fmt: skip
    for part in parts:
        if not part:
            continue
        for _, _, files in part:
            _write_folder(out, files)
        b = _background_of(spec, part[0][0])
        done[b] = [row for _, row, _ in part]
        record = progress / f"b{b:06d}.json"
        record.with_suffix(".tmp").write_text(json.dumps(done[b]))
        record.with_suffix(".tmp").rename(record)
    return [row for b in range(spec.n_backgrounds) for row in done[b]]


def _row_files(row: dict, first: bool) -> list[str]:
    return sorted([row["fg_bg"], row["mask"], row["depth"]] + ([row["bg"]] if first else []))


def _zip_folder(folder: Path, rows: list[dict], out: Path) -> None:
    """The generated folder as one zip, entries in a fixed order with fixed dates."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for i, row in enumerate(rows):
            first = i == 0 or rows[i - 1]["bg"] != row["bg"]
            for name in _row_files(row, first):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                z.writestr(info, (folder / name).read_bytes())
        for name, data in (("manifest.csv", _manifest_csv(rows)), (DATASET_YAML, dataset_yaml())):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    tmp.rename(out)


def generate(
    spec: SynthConfig, out: str | Path, as_zip: bool = False, workers: int = 1, quiet: bool = False
) -> Path:
    """Write ``spec.n`` composites to ``out`` (a folder, or a zip file); returns ``out``.

    The same spec gives byte-identical files whatever the number of workers, and a
    generation that was killed continues where it stopped when run again (a zip is made
    from a folder ``OUT.parts`` beside it, which is then removed).
    """
    if spec.n < 1 or spec.size < 16:
        raise ValueError("synth needs n >= 1 and size >= 16")
    out = Path(out)
    folder = out.with_name(out.name + ".parts") if as_zip else out
    if as_zip:
        check_new_file(out)
    check_new_folder(folder, allowed=lambda f: _same_spec(f / PROGRESS, spec))
    rows = _generate_folder(spec, folder, workers, quiet)
    if as_zip:
        _zip_folder(folder, rows, out)
        shutil.rmtree(folder)
    else:
        (out / DATASET_YAML).write_bytes(dataset_yaml())
        (out / "manifest.csv").write_bytes(_manifest_csv(rows))
        shutil.rmtree(out / PROGRESS)
    return out


def _bg_len(spec: SynthConfig, b: int) -> int:
    return -(-(b + 1) * spec.n // spec.n_backgrounds) - -(-b * spec.n // spec.n_backgrounds)


def _manifest_csv(rows: list[dict]) -> bytes:
    cols = ["fg_bg", "bg", "mask", "depth", "bg_id", "kind", "fg_distance_m"]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    return ("\n".join(lines) + "\n").encode()
