"""Picture grids of samples: a row per sample, a column per image (bg | fg_bg | mask | depth)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fgdepth.data.dataset import Dataset
from fgdepth.data.units import DepthEncoding


def to_rgb(image: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8, (H,W) bool/float in [0,1] -> (H,W,3) uint8; grey for single channel."""
    if image.ndim == 3:
        return image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).astype(np.uint8)
    grey = (np.clip(image.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def colour_depth(depth: np.ndarray) -> np.ndarray:
    """[0,1] depth (brighter = nearer) -> (H,W,3) uint8 with a perceptual-ish colour ramp."""
    stops = np.array(
        [[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], np.float32
    )
    x = np.clip(depth, 0, 1) * (len(stops) - 1)
    lo = np.floor(x).astype(int).clip(0, len(stops) - 2)
    frac = (x - lo)[..., None]
    return (stops[lo] * (1 - frac) + stops[lo + 1] * frac).astype(np.uint8)


def _significant(z: float, digits: int) -> float:
    return round(z, digits - 1 - math.floor(math.log10(z))) if z > 0 else z


def depth_ticks(encoding: DepthEncoding | None, n: int = 5) -> list[tuple[float, str]]:
    """``n`` ticks (stored depth, label) from near (1) to far (0), evenly spaced along the
    colour ramp: in metres when ``encoding`` is known (the inner ones rounded to as few
    digits as keep them apart, and placed where that distance lies), else in 0..1."""
    positions = np.linspace(1.0, 0.0, n)
    if encoding is None:
        labels = [f"{d:g}" for d in positions]
        labels = [f"{labels[0]} near", *labels[1:-1], f"{labels[-1]} far"]
        return list(zip(positions.tolist(), labels, strict=True))
    metres = [float(encoding.to_metres(d)) for d in positions]
    for digits in (2, 3, 4):
        inner = [_significant(z, digits) for z in metres[1:-1]]
        if len(set([metres[0], *inner, metres[-1]])) == n:
            break
    metres = [metres[0], *inner, metres[-1]]
    return [(float(encoding.to_unit(z)), f"{z:g} m") for z in metres]


def colour_depth_with_scale(depth: np.ndarray, encoding: DepthEncoding | None = None) -> np.ndarray:
    """``colour_depth(depth)`` with a colour bar on its right: (H, W + bar, 3) uint8, the
    left W columns exactly ``colour_depth``'s. Its ticks are in metres when ``encoding`` is
    known, else in 0..1 (near at the top)."""
    picture = colour_depth(depth)
    h, w = picture.shape[:2]
    text = int(np.clip(h / 18, 10, 40))  # label height in pixels
    font = ImageFont.load_default(size=text)
    n = 5 if h >= 6 * text else 3 if h >= 4 * text else 2
    ticks = depth_ticks(encoding, n)
    bar_w, gap = max(6, text), max(3, text // 3)
    label_w = max(int(font.getlength(label)) for _, label in ticks)
    canvas = Image.new("RGB", (w + gap + bar_w + gap + label_w + gap, h), "white")
    canvas.paste(Image.fromarray(picture), (0, 0))
    top, bottom = text // 2 + 1, h - text // 2 - 2  # the ends' labels fit above and below
    ramp = colour_depth(np.linspace(1.0, 0.0, bottom - top + 1, dtype=np.float32)[:, None])
    bar = np.repeat(ramp, bar_w, axis=1)  # (bar height, bar_w, 3): near at the top
    x0 = w + gap
    canvas.paste(Image.fromarray(bar), (x0, top))
    draw = ImageDraw.Draw(canvas)
    for d, label in ticks:
        y = round(top + (1.0 - d) * (bottom - top))
        draw.line([(x0 + bar_w - gap, y), (x0 + bar_w + gap // 2, y)], fill="black")
        draw.text((x0 + bar_w + gap, y), label, fill="black", font=font, anchor="lm")
    return np.asarray(canvas)


def grid(
    rows: list[list[np.ndarray]],
    titles: list[str] | None = None,
    pad: int = 2,
    labels: list[str] | None = None,
) -> Image.Image:
    """Tile equally sized (H,W,3) uint8 images; optional column titles on top and a label
    left of each row (e.g. its dataset row)."""
    h, w = rows[0][0].shape[:2]
    top = 14 if titles else 0
    left = 6 * max(len(text) for text in labels) + 6 if labels else 0  # the default font: 6 px
    cols = max(len(r) for r in rows)
    size = (left + cols * (w + pad) + pad, top + len(rows) * (h + pad) + pad)
    canvas = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles or []):
        draw.text((left + pad + c * (w + pad) + 2, 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = top + pad + r * (h + pad)
        if labels:
            draw.text((3, y + h // 2), labels[r], fill=(0, 0, 0), anchor="lm")
        for c, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (left + pad + c * (w + pad), y))
    return canvas


def preview(dataset: Dataset, indices, size: int | None = None) -> Image.Image:
    """bg | fg_bg | mask | depth for the given rows."""
    rows = []
    for i in indices:
        s = dataset.sample(i, size)
        rows.append([s.bg, s.fg_bg, to_rgb(s.mask), colour_depth(s.depth)])
    return grid(rows, ["bg", "fg_bg", "mask", "depth"])


def prediction_grid(runs: list[tuple[str, list[dict]]], samples: int | None = None) -> Image.Image:
    """The same samples as predicted by one run or several: a row per sample, fg_bg | bg |
    mask | depth, then each run's predicted mask and depth. ``runs``: (name, images) pairs,
    images as ``engine.evaluate.sample_predictions`` gives them: each row labelled with its
    dataset row where the images name it."""
    n = min(len(images) for _, images in runs)
    rows, labels = [], []
    for i in range(n if samples is None else min(n, samples)):
        s = runs[0][1][i]
        labels.append(f"row {s['row']}" if "row" in s else "")
        line = [s["fg_bg"], s["bg"], to_rgb(s["mask"]), colour_depth(s["depth"])]
        for _, images in runs:
            line += [to_rgb(images[i]["mask_pred"]), colour_depth(images[i]["depth_pred"])]
        rows.append(line)
    titles = ["fg_bg", "bg", "mask", "depth"]
    for name, _ in runs:
        titles += ["mask pred", "depth pred"] if len(runs) == 1 else [name[:9], ""]
    return grid(rows, titles, labels=labels if any(labels) else None)
