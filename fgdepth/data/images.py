"""Opening one image from a path or from encoded bytes (predictions, the served model)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from fgdepth.data.format import DataError


def open_image(source: str | Path | bytes) -> Image.Image:
    """A path or encoded image bytes -> PIL image; DataError names what cannot be read."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{source}: no such image file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        name = "image bytes" if isinstance(source, bytes) else source
        raise DataError(f"{name}: not a readable image ({exc})") from None
