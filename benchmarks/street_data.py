"""A second, independent dataset for measuring quality on data fgdepth did not generate.

Street scenes, written apart from the built-in generator (``fgdepth/data/synth.py``) and
sharing none of its code: a road between two rows of building facades under a sky, seen by a
camera of random height, pitch and focal length, at 4:3 (240 x 180 px; the loader resizes it).
Foregrounds are cars, traffic cones, dogs, sign posts and barrels drawn as anti-aliased polygons,
standing on the road. Between bg and fg_bg: a soft contact shadow, a small exposure change,
sensor noise and JPEG compression, each drawn independently. Depth is stored the way many
sensors export it, linear inverse depth in 8 bits (``1.5 m / z``, brighter = nearer), not the
built-in data's 16-bit log depth.

    python benchmarks/street_data.py OUT [--n 12000] [--seed 1] [--workers 2] [--preview PNG]

The folder it writes is an ordinary dataset in the documented format (manifest.csv with
fg_bg, bg, mask, depth and bg_id columns); ``fgdepth inspect OUT`` checks it.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 240, 180
PER_BACKGROUND = 10
Z_NEAR_INV, Z_SKY = 1.5, 200.0
SUPER = 4  # supersampling of the drawn foreground: its mask is the covered fraction > 1/2


def _smooth_noise(rng, shape, blur: float) -> np.ndarray:
    img = Image.fromarray((rng.random(shape) * 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255.0


def _street(rng) -> tuple[np.ndarray, np.ndarray, dict]:
    """One background: RGB float (H, W, 3) and camera-axis depth (H, W) in metres."""
    f = W * rng.uniform(0.7, 1.2)
    cam_h, pitch = rng.uniform(1.1, 2.2), rng.uniform(-0.02, 0.18)
    cx, cy = W / 2 + rng.uniform(-10, 10), H / 2 + rng.uniform(-8, 8)
    left, right = -rng.uniform(4, 9), rng.uniform(4, 9)
    heights = rng.uniform(5, 18, 2)
    end = rng.uniform(35, 90)
    us, vs = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    xn, yn = (us - cx) / f, (vs - cy) / f
    s, c = math.sin(pitch), math.cos(pitch)
    dx, dy, dz = xn, -yn * c - s, -yn * s + c  # world directions; camera z-depth = t
    depth = np.full((H, W), Z_SKY, np.float32)
    kind = np.zeros((H, W), np.int8)  # 0 sky, 1 road, 2 left, 3 right, 4 end
    coords = np.zeros((H, W, 2), np.float32)  # texture coordinates on the hit surface

    def hit(t, k, a, b, ok):
        take = ok & (t > 0.05) & (t < depth)
        depth[take] = t[take]
        kind[take] = k
        coords[take, 0], coords[take, 1] = a[take], b[take]

    with np.errstate(divide="ignore", invalid="ignore"):
        t = cam_h / -dy
        hit(t, 1, dx * t, dz * t, dy < 0)
        for k, wall, height in ((2, left, heights[0]), (3, right, heights[1])):
            t = wall / dx
            y = cam_h + dy * t
            hit(t, k, dz * t, y, (y >= 0) & (y <= height))
        t = end / dz
        y = cam_h + dy * t
        hit(t, 4, dx * t, y, (y >= 0) & (y <= max(heights)))
    rgb = np.zeros((H, W, 3), np.float32)
    grain = _smooth_noise(rng, (H, W), 1.0)
    sky = np.array([0.45, 0.62, 0.9]) + rng.uniform(-0.1, 0.1, 3)
    rgb[:] = (
        sky * (0.75 + 0.35 * vs[..., None] / H) + 0.15 * _smooth_noise(rng, (H, W), 6)[..., None]
    )
    road = rng.uniform(0.25, 0.45)
    a, b = coords[..., 0], coords[..., 1]
    lane = (np.abs(a) < 0.08) & ((b % 6) < 3)
    tone = road + 0.08 * (grain - 0.5)
    rgb[kind == 1] = (tone[kind == 1, None] + 0.5 * lane[kind == 1, None]) * np.array([1, 1, 1.03])
    for k in (2, 3, 4):
        colour = rng.uniform(0.3, 0.85, 3)
        window = rng.uniform(0.05, 0.3, 3)
        sel = kind == k
        pa, pb = rng.uniform(2.5, 4.5), rng.uniform(2.8, 3.6)
        win = ((a[sel] % pa) > pa * 0.45) & ((b[sel] % pb) > pb * 0.4) & (b[sel] > 1.0)
        shade = 0.85 + 0.15 * grain[sel, None]
        rgb[sel] = np.where(win[:, None], window, colour) * shade
    # light falls off with distance a little: far surfaces are hazier
    haze = np.clip(depth / 120.0, 0, 0.6)[..., None]
    rgb = rgb * (1 - haze) + sky * haze
    return np.clip(rgb, 0, 1), depth, {"f": f, "h": cam_h, "pitch": pitch, "cx": cx, "cy": cy}


def _shape(kind: str, rng, draw: ImageDraw.ImageDraw, foot: tuple, px: float, colour) -> None:
    """Draw one foreground of height ``px`` pixels standing on ``foot`` (supersampled)."""
    x, y = foot
    fill = tuple(int(255 * v) for v in colour)
    dark = tuple(int(255 * v * 0.35) for v in colour)
    if kind == "car":
        w = px * rng.uniform(1.8, 2.6)
        body = [
            (x - w / 2, y - px * 0.15),
            (x + w / 2, y - px * 0.15),
            (x + w / 2, y - px * 0.55),
            (x + w * 0.25, y - px * 0.6),
            (x + w * 0.12, y - px),
            (x - w * 0.3, y - px),
            (x - w * 0.4, y - px * 0.6),
            (x - w / 2, y - px * 0.55),
        ]
        draw.polygon(body, fill=fill)
        r = px * 0.17
        for wx in (x - w * 0.3, x + w * 0.3):
            draw.ellipse([wx - r, y - 2 * r, wx + r, y], fill=dark)
        draw.polygon(
            [
                (x - w * 0.25, y - px * 0.62),
                (x + w * 0.2, y - px * 0.62),
                (x + w * 0.1, y - px * 0.92),
                (x - w * 0.22, y - px * 0.92),
            ],
            fill=(70, 90, 110),
        )
    elif kind == "cone":
        w = px * 0.55
        draw.polygon(
            [(x - w / 2, y), (x + w / 2, y), (x + w * 0.08, y - px), (x - w * 0.08, y - px)],
            fill=fill,
        )
        draw.polygon(
            [
                (x - w * 0.3, y - px * 0.45),
                (x + w * 0.3, y - px * 0.45),
                (x + w * 0.22, y - px * 0.6),
                (x - w * 0.22, y - px * 0.6),
            ],
            fill=(240, 240, 240),
        )
    elif kind == "dog":
        L = px * rng.uniform(1.3, 1.7)
        side = rng.choice([-1, 1])
        draw.ellipse([x - L / 2, y - px * 0.85, x + L / 2, y - px * 0.4], fill=fill)
        hx = x + side * L * 0.5
        draw.ellipse([hx - px * 0.22, y - px, hx + px * 0.22, y - px * 0.6], fill=fill)
        for lx in (x - L * 0.35, x - L * 0.15, x + L * 0.15, x + L * 0.35):
            draw.rectangle([lx - px * 0.05, y - px * 0.55, lx + px * 0.05, y], fill=fill)
        tx = x - side * L * 0.5
        draw.line(
            [(tx, y - px * 0.7), (tx - side * px * 0.3, y - px * 0.95)],
            fill=fill,
            width=max(1, int(px * 0.07)),
        )
    elif kind == "sign":
        r = px * 0.22
        draw.rectangle([x - px * 0.03, y - px + r, x + px * 0.03, y], fill=(120, 120, 125))
        shape = rng.integers(3)
        box = [x - r, y - px, x + r, y - px + 2 * r]
        if shape == 0:
            draw.ellipse(box, fill=fill)
        elif shape == 1:
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x, y - px), (x + r, y - px + 2 * r), (x - r, y - px + 2 * r)], fill=fill)
    else:  # barrel
        w = px * 0.65
        draw.rounded_rectangle([x - w / 2, y - px, x + w / 2, y], radius=w * 0.2, fill=fill)
        for k in (0.3, 0.7):
            draw.rectangle(
                [x - w / 2, y - px * k - px * 0.04, x + w / 2, y - px * k + px * 0.04], fill=dark
            )


KINDS = {"car": 1.5, "cone": 0.7, "dog": 0.6, "sign": 2.4, "barrel": 1.0}  # heights in metres


def _composite(rng, bg: np.ndarray, depth: np.ndarray, cam: dict):
    """fg_bg (float RGB), mask (bool) and depth (metres) with one foreground on the road."""
    kind = str(rng.choice(list(KINDS)))
    for _ in range(50):
        z = rng.uniform(3.0, 28.0)
        x = rng.uniform(-3.0, 3.0)
        s, c = math.sin(cam["pitch"]), math.cos(cam["pitch"])
        # world point (x, 0, z_world) -> camera; choose z_world so the camera depth is z
        zw = (z - cam["h"] * s) / c
        down = cam["h"] * c - zw * s
        u, v = cam["cx"] + cam["f"] * x / z, cam["cy"] + cam["f"] * down / z
        px = cam["f"] * KINDS[kind] * rng.uniform(0.85, 1.15) / z
        if 8 < u < W - 8 and px * 1.1 < v < H - 2 and px >= 6 and depth[int(v) - 1, int(u)] > z:
            break
    else:
        return None
    canvas = Image.new("RGBA", (W * SUPER, H * SUPER), (0, 0, 0, 0))
    colour = np.clip(rng.uniform(0.05, 0.95, 3), 0, 1)
    _shape(kind, rng, ImageDraw.Draw(canvas), (u * SUPER, v * SUPER), px * SUPER, colour)
    small = canvas.resize((W, H), Image.BOX)
    cover = np.asarray(small.split()[3], np.float32) / 255.0
    rgb = np.asarray(small.convert("RGB"), np.float32) / 255.0 / np.maximum(cover, 1e-3)[..., None]
    # shading: lighter on top, darker at the bottom
    shade = 1.1 - 0.3 * np.clip((np.arange(H)[:, None] - (v - px)) / max(px, 1), 0, 1)
    rgb = np.clip(rgb * shade[..., None], 0, 1)
    out = bg.copy()
    # contact shadow on the road, under and beside the foreground
    shadow = Image.new("L", (W, H), 0)
    sw = px * (1.2 if kind in ("car", "dog") else 0.6)
    off = rng.uniform(-0.6, 0.6) * sw
    ImageDraw.Draw(shadow).ellipse(
        [u - sw + off, v - px * 0.08, u + sw + off, v + px * 0.1], fill=255
    )
    shadow_a = (
        np.asarray(shadow.filter(ImageFilter.GaussianBlur(max(1.0, px * 0.05))), np.float32) / 255
    )
    out *= (1 - 0.45 * shadow_a * (depth < Z_SKY))[..., None]
    out = out * (1 - cover[..., None]) + rgb * cover[..., None]
    mask = cover > 0.5
    fg_depth = depth.copy()
    fg_depth[mask] = z
    return out, mask, fg_depth


def _photo(rgb: np.ndarray, rng, gain: float) -> bytes:
    noisy = rgb * gain + rng.normal(0, 0.012, rgb.shape)
    img = Image.fromarray((np.clip(noisy, 0, 1) * 255).round().astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(82, 96)))
    return buf.getvalue()


def _depth_png(z: np.ndarray) -> Image.Image:
    inv = np.clip(Z_NEAR_INV / z, 0, 1)
    return Image.fromarray((inv * 255).round().astype(np.uint8))


def _write_background(job: tuple) -> list[str]:
    out, index, seed = job
    rng = np.random.default_rng([seed, index])
    bg, depth, cam = _street(rng)
    bg_name = f"bg/{index:05d}.jpg"
    (out / bg_name).write_bytes(_photo(bg, rng, 1.0))
    rows = []
    k = 0
    while len(rows) < PER_BACKGROUND:
        made = _composite(rng, bg, depth, cam)
        k += 1
        if made is None:
            continue
        fg_bg, mask, fg_depth = made
        name = f"{index:05d}_{len(rows):02d}"
        (out / f"fg_bg/{name}.jpg").write_bytes(_photo(fg_bg, rng, rng.uniform(0.96, 1.04)))
        Image.fromarray((mask * 255).astype(np.uint8)).save(out / f"mask/{name}.png")
        _depth_png(fg_depth).save(out / f"depth/{name}.png")
        rows.append(f"fg_bg/{name}.jpg,{bg_name},mask/{name}.png,depth/{name}.png,street{index}")
    return rows


def write(out: Path, n: int, seed: int, workers: int) -> Path:
    for sub in ("bg", "fg_bg", "mask", "depth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(out, i, seed) for i in range(math.ceil(n / PER_BACKGROUND))]
    with Pool(workers) as pool:
        chunks = pool.map(_write_background, jobs, chunksize=8)
    lines = ["fg_bg,bg,mask,depth,bg_id"] + [r for rows in chunks for r in rows][:n]
    (out / "manifest.csv").write_text("\n".join(lines) + "\n")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=12000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--preview", type=Path, help="also save a grid of 6 samples (fgdepth's own)")
    args = p.parse_args(argv)
    write(args.out, args.n, args.seed, args.workers)
    print(f"{args.n} samples written to {args.out}")
    if args.preview:
        from fgdepth.data import open_dataset
        from fgdepth.data.preview import preview

        step = max(1, args.n // 6)
        preview(open_dataset(args.out), range(0, min(args.n, 6 * step), step)).save(args.preview)
    return 0


if __name__ == "__main__":
    sys.exit(main())
