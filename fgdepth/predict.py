"""Predict the mask and depth of (bg, fg_bg) image pairs with a trained model.

Outputs per pair, at the input images' size: ``mask.png`` (0/255), ``mask_soft.png`` (the
probability, 8-bit), ``depth.png`` (16-bit, the dataset's depth scale: 0..65535 for 0..1),
``depth_colour.png`` (with a colour bar on its right), and the foreground's distance: the
median predicted depth inside the predicted mask (NaN when the mask is empty: ``null`` in JSON,
empty in ``predictions.csv``), in the same 0..1 depth units as the training data, and in metres
(``distance_m``) when the training data declared its depth encoding (``dataset.yaml``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from fgdepth.data.format import DataError
from fgdepth.data.images import open_image
from fgdepth.data.preview import colour_depth_with_scale
from fgdepth.data.units import DepthEncoding
from fgdepth.engine.pairs import Prediction, predict_pairs

__all__ = ["Prediction", "open_image", "predict_files", "predict_manifest", "predict_pairs"]


def write_prediction(
    pred: Prediction, out: Path, encoding: DepthEncoding | None = None
) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "mask": out / "mask.png",
        "mask_soft": out / "mask_soft.png",
        "depth": out / "depth.png",
        "depth_colour": out / "depth_colour.png",
    }
    Image.fromarray(pred.mask.astype(np.uint8) * 255).save(files["mask"])
    Image.fromarray((pred.mask_prob * 255).round().astype(np.uint8)).save(files["mask_soft"])
    Image.fromarray((pred.depth * 65535).round().astype(np.uint16)).save(files["depth"])
    Image.fromarray(colour_depth_with_scale(pred.depth, encoding)).save(files["depth_colour"])
    return files


def read_pairs_manifest(path: Path) -> list[tuple[int, str, Path, Path]]:
    """A CSV with columns ``bg`` and ``fg_bg`` (paths relative to the CSV): (line, name, bg,
    fg_bg) per data row, ``line`` the file's line the row starts on (blank lines are left out,
    and counted)."""
    try:
        with open(path, newline="") as f:
            records = _records(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not a manifest (CSV)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if not records or not {"bg", "fg_bg"} <= set(records[0][1]):
        raise DataError(f"{path}: a prediction manifest needs the columns bg and fg_bg")
    (_, header), *rows = records
    if not rows:
        raise DataError(f"{path}: no pairs to predict (a header and no rows)")
    pairs = []
    for i, (line, values) in enumerate(rows):
        row = dict(zip(header, values, strict=False))  # a short row: the rest are empty
        bg, fg_bg = row.get("bg", ""), row.get("fg_bg", "")
        pairs.append((line, Path(fg_bg).stem or f"row{i}", path.parent / bg, path.parent / fg_bg))
    return pairs


def _records(reader) -> list[tuple[int, list[str]]]:
    """(the line it starts on, its values) of each record of a CSV reader that is not blank."""
    records, end = [], 0  # the line the previous record ended on
    for values in reader:
        if any(value.strip() for value in values):
            records.append((end + 1, values))
        end = reader.line_num
    return records


def distance_text(distance: float | None, encoding: DepthEncoding | None = None) -> str:
    """The foreground's distance for the console: in metres when ``encoding`` is known
    (``4.93 m``), else in 0..1 depth units, saying so."""
    if distance is None or math.isnan(distance):
        return "no foreground found"
    if encoding is None:
        return f"{distance:.4f} (0..1 depth units; the data declared no encoding)"
    return f"{float(encoding.to_metres(distance)):.2f} m"


def json_distance(distance: float) -> float | None:
    """The distance for strict JSON: ``None`` (``null``) when there is none."""
    return None if math.isnan(distance) else distance


def distance_metres(distance: float, encoding: DepthEncoding | None) -> float | None:
    """The distance in metres; None when there is none or the encoding is unknown."""
    if encoding is None or math.isnan(distance):
        return None
    return round(float(encoding.to_metres(distance)), 4)


def predict_files(
    model: nn.Module, size: int, bg: Path, fg_bg: Path, out: Path, encoding=None
) -> dict:
    """One pair of image files -> its pictures under ``out``; what was predicted (a row of
    ``predictions.csv``). ``encoding``: the training data's DepthEncoding (None: unknown).
    DataError names an image that cannot be used."""
    (pred,) = predict_pairs(model, [(open_image(bg), open_image(fg_bg))], size)
    write_prediction(pred, out, encoding)
    return {"bg": str(bg), "fg_bg": str(fg_bg), "status": "ok",
            "distance": json_distance(pred.distance),
            "distance_m": distance_metres(pred.distance, encoding), "out": str(out)}  # fmt: skip


def predict_manifest(
    model: nn.Module, size: int, manifest: Path, out: Path, stop_on_error: bool = False,
    say=print, *, encoding: DepthEncoding | None = None,
) -> list[dict]:  # fmt: skip
    """Every pair of a manifest, each in its folder under ``out``, and ``out/predictions.csv``
    with a status per row (``ok`` or why the row failed). A bad row is recorded and the next
    one predicted; with ``stop_on_error`` the first bad row raises DataError (naming its CSV
    line) once ``predictions.csv`` holds the rows before it. ``encoding``: as for
    ``predict_files``."""
    rows = []
    for i, (line, name, bg, fg_bg) in enumerate(read_pairs_manifest(manifest)):
        folder = f"{i:05d}_{name}"
        try:
            row = {"name": folder, **predict_files(model, size, bg, fg_bg, out / folder, encoding)}
            say(f"{fg_bg}: foreground distance {distance_text(row['distance'], encoding)}")
        except DataError as exc:
            row = {"name": folder, "bg": str(bg), "fg_bg": str(fg_bg), "status": str(exc),
                   "distance": None, "distance_m": None, "out": ""}  # fmt: skip
            say(f"{manifest} line {line}: {exc}")
            if stop_on_error:
                _write_table(rows + [row], out)
                raise DataError(f"{manifest} line {line}: {exc}") from None
        rows.append(row)
    _write_table(rows, out)
    return rows


def _write_table(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["name", "bg", "fg_bg", "status", "distance", "distance_m", "out"]
    numbers = ("distance", "distance_m")  # empty when there is none (or no encoding)
    with open(out / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({**r, **{k: "" if r[k] is None else r[k] for k in numbers}}
                         for r in rows)  # fmt: skip
