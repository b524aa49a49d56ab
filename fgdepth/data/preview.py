"""Picture grids of samples: a row per sample, a column per image (bg | fg_bg | mask | depth)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from fgdepth.data.dataset import Dataset


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


def grid(
    rows: list[list[np.ndarray]], titles: list[str] | None = None, pad: int = 2
) -> Image.Image:
    """Tile equally sized (H,W,3) uint8 images; optional column titles on top."""
    h, w = rows[0][0].shape[:2]
    top = 14 if titles else 0
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, top + len(rows) * (h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles or []):
        draw.text((pad + c * (w + pad) + 2, 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas.paste(Image.fromarray(image), (pad + c * (w + pad), top + pad + r * (h + pad)))
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
    images as ``engine.evaluate.sample_predictions`` gives them."""
    n = min(len(images) for _, images in runs)
    rows = []
    for i in range(n if samples is None else min(n, samples)):
        s = runs[0][1][i]
        line = [s["fg_bg"], s["bg"], to_rgb(s["mask"]), colour_depth(s["depth"])]
        for _, images in runs:
            line += [to_rgb(images[i]["mask_pred"]), colour_depth(images[i]["depth_pred"])]
        rows.append(line)
    titles = ["fg_bg", "bg", "mask", "depth"]
    for name, _ in runs:
        titles += ["mask pred", "depth pred"] if len(runs) == 1 else [name[:9], ""]
    return grid(rows, titles)
