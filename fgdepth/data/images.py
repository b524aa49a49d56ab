"""Opening one image from a path or from encoded bytes (predictions, the served model)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from fgdepth.data.format import UNREADABLE, DataError, unreadable


def open_image(source: str | Path | bytes) -> Image.Image:
    """A path or encoded image bytes -> PIL image; DataError names what cannot be read (an
    image over PIL's pixel limit too)."""
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except FileNotFoundError:
        raise DataError(f"{source}: no such image file") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a folder, not an image file") from None
    except UNREADABLE as exc:
        raise unreadable("image bytes" if isinstance(source, bytes) else source, exc) from None
