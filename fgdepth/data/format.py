"""The on-disk dataset format: a folder or a zip holding ``manifest.csv`` and images.

A manifest row names four files relative to the dataset root: ``fg_bg`` (the scene with the
foreground), ``bg`` (the same scene without it), ``mask`` (foreground where > 127) and ``depth``
(single channel, 8- or 16-bit, brighter = nearer). Extra columns are kept. See docs/datasets.md.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fgdepth.data.pack import PackReader, is_pack
from fgdepth.data.units import DATASET_YAML, DepthEncoding, read_declaration
from fgdepth.errors import DataError

COLUMNS = ("fg_bg", "bg", "mask", "depth")
MANIFEST = "manifest.csv"
ROOT_FILES = (MANIFEST, DATASET_YAML)  # at the root of a packed dataset too, not in its shards


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, located by manifest row (0-based data row) and file;
    shown with the manifest's line number: ``line`` (``Source.line_of``), else ``row + 2`` (a
    header on line 1 and no blank line)."""

    message: str
    row: int | None = None
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"{MANIFEST} line {self.line or self.row + 2}")
        if self.file:
            where.append(self.file)
        return f"{': '.join(where)}: {self.message}" if where else self.message


class Source:
    """Read-only access to the files of a dataset, whether a folder or a zip (read in place)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.is_zip = self.path.is_file() and zipfile.is_zipfile(self.path)
        if self.path.is_file() and not self.is_zip:
            raise DataError(f"{self.path}: {_not_a_zip(self.path)}")
        if not self.is_zip and not self.path.is_dir():
            raise DataError(f"{self.path}: no such dataset (expected a folder or a .zip)")
        # a packed dataset (``fgdepth data pack``): members read from its shards by the index
        self.pack = PackReader(self.path) if not self.is_zip and is_pack(self.path) else None
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        self._names: set[str] | None = None
        self._dirs: dict[str, Path] = {}  # resolved folders: datasets hold 10^5 files
        self._listings: dict[str, dict[str, os.DirEntry]] = {}  # one scan per folder
        self._folder_outside: dict[str, bool] = {}
        self.row_lines: np.ndarray | None = None  # set by read_manifest (None: row + 2)
        self.prefix = ""
        if self.is_zip:
            self.prefix = self._find_prefix()

    # A ZipFile handle must not be shared across fork: reopen it in each process.
    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_zip"] = None
        state["_zip_pid"] = None
        state["_listings"] = {}  # directory entries do not pickle; another process scans again
        return state

    def _find_prefix(self) -> str:
        """A zip may hold the dataset at its root or inside a single top-level folder."""
        names = self.names()
        if MANIFEST in names:
            return ""
        candidates = [n[: -len(MANIFEST)] for n in names if n.endswith("/" + MANIFEST)]
        candidates = [c for c in candidates if c.count("/") == 1]
        return candidates[0] if len(candidates) == 1 else ""

    def names(self) -> set[str]:
        if self._names is None:
            self._names = set(self._zipfile().namelist()) if self.is_zip else set()
        return self._names

    def duplicate_names(self) -> list[str]:
        if not self.is_zip:
            return []
        counts = Counter(self._zipfile().namelist())
        return sorted(n for n, c in counts.items() if c > 1)

    def line_of(self, row: int) -> int:
        """The manifest's line that holds data row ``row`` (its header is line 1)."""
        return int(self.row_lines[row]) if self.row_lines is not None else row + 2

    def exists(self, rel: str) -> bool:
        if self.pack is not None:
            if rel in ROOT_FILES:
                return rel == MANIFEST or (self.path / rel).is_file()
            return self.pack.where(rel) is not None
        if self.is_zip:
            return self.prefix + rel in self.names()
        entry = self._entry(rel)
        if entry is not None:
            return entry.is_file()
        return (self.path / rel).is_file()  # a name the scan spells differently (case)

    def _entry(self, rel: str) -> os.DirEntry | None:
        """``rel``'s entry in its folder's listing, scanned once per folder: a stat per file
        would cost seconds on a manifest of 10^5 paths."""
        folder, _, name = rel.rpartition("/")
        if folder not in self._listings:
            try:
                with os.scandir(self.path / folder) as entries:
                    self._listings[folder] = {entry.name: entry for entry in entries}
            except OSError:  # not a folder: its files are missing
                self._listings[folder] = {}
        return self._listings[folder].get(name)

    def read(self, rel: str) -> bytes:
        if self.pack is not None and rel not in ROOT_FILES:
            return self.pack.read(rel)
        if self.is_zip:
            try:
                return self._zipfile().read(self.prefix + rel)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise DataError(f"{self.path}: a corrupt zip ({rel}: {exc})") from None
        return (self.path / rel).read_bytes()

    def stat_key(self, rel: str) -> tuple:
        """What identifies a file's content cheaply (for cache invalidation)."""
        if self.pack is not None and rel != MANIFEST:
            found = self.pack.where(rel)
            if found is None:
                raise KeyError(rel)
            return (rel, *found)
        if self.is_zip:
            info = self._zipfile().getinfo(self.prefix + rel)
            return (rel, info.CRC, info.file_size)
        st = (self.path / rel).stat()
        return (rel, st.st_size, st.st_mtime_ns)

    def escapes_root(self, rel: str) -> bool:
        """True for a folder path that resolves (e.g. through a link) outside the root."""
        if self.is_zip or self.pack is not None:
            return False
        parent, _, name = rel.rpartition("/")
        entry = self._entry(rel)
        if entry is not None and not entry.is_symlink():  # a plain file: where its folder is
            return self._outside(parent)
        target = self._resolved(parent) / name
        if target.is_symlink():
            target = target.resolve()
        return not target.is_relative_to(self._resolved(""))

    def _outside(self, folder: str) -> bool:
        """Whether a folder of the dataset resolves outside the root, once per folder."""
        if folder not in self._folder_outside:
            root = self._resolved("")
            self._folder_outside[folder] = not self._resolved(folder).is_relative_to(root)
        return self._folder_outside[folder]

    def _resolved(self, folder: str) -> Path:
        """A folder of the dataset with links resolved, once per folder."""
        if folder not in self._dirs:
            self._dirs[folder] = (self.path / folder).resolve()
        return self._dirs[folder]


def _not_a_zip(path: Path) -> str:
    """Why a file given as a dataset cannot be read: a zip cut short or corrupt, or no zip."""
    with open(path, "rb") as f:
        start = f.read(4)
    if start.startswith(b"PK") or path.suffix.lower() == ".zip":
        return "a truncated or corrupt zip (its table of contents cannot be read)"
    return "not a dataset (expected a folder or a .zip)"


def bad_relpath(rel: str) -> str | None:
    """Why a manifest path is refused, or None when it is a plain path inside the root."""
    if not rel:
        return "empty path"
    if "\\" in rel:
        return "path uses '\\' (use '/')"
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        return "absolute path (paths must be relative to the dataset root)"
    parts = rel.split("/")
    if ".." in parts:
        return "path leaves the dataset root ('..')"
    if posixpath.normpath(rel) in (".", ""):
        return "path names the root itself"
    return None


def read_manifest(source: Source) -> pd.DataFrame:
    """The manifest as strings, with its header checked; raises DataError."""
    if not source.exists(MANIFEST):
        raise DataError(f"{source.path}: {MANIFEST} not found at the dataset root")
    data = source.read(MANIFEST)
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{source.path}: {MANIFEST} is not a readable CSV ({exc})") from exc
    source.row_lines = data_lines(data, len(frame))
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source.path}: {MANIFEST} lacks column(s) {', '.join(missing)}"
            f" (header must include {','.join(COLUMNS)})"
        )
    if frame.empty:
        raise DataError(f"{source.path}: {MANIFEST} has no rows: the dataset is empty")
    for col in COLUMNS:
        frame[col] = frame[col].str.strip()
    return frame.reset_index(drop=True)


def read_depth_encoding(source: Source) -> DepthEncoding | None:
    """The depth encoding declared in ``dataset.yaml`` beside the manifest (see
    ``data.units``); None when there is no such file. DataError, one line naming the file,
    when it cannot be read as one."""
    if not source.exists(DATASET_YAML):
        return None
    try:
        return read_declaration(source.read(DATASET_YAML))
    except DataError as exc:
        raise DataError(f"{source.path}: {DATASET_YAML}: {exc}") from None


BLANK_LINE = re.compile(rb"(^|\n)[ \t\r]*(\n|$)")


def data_lines(data: bytes, rows: int) -> np.ndarray | None:
    """The line of each data row of a CSV, counting the blank lines that the reader skips and
    the line breaks inside quoted values; None when every row ``i`` is on line ``i + 2``."""
    if not BLANK_LINE.search(data.rstrip(b"\r\n")) and b'"' not in data:
        return None
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline=""))
    lines, end = [], 0  # the line the previous record ended on
    for record in reader:
        if len(record) > 1 or (record and record[0].strip()):  # a line of spaces is skipped
            lines.append(end + 1)
        end = reader.line_num
    lines = lines[1:]  # the header's
    if len(lines) != rows:  # read otherwise than pandas did: the plain count is the guess
        return None
    return np.asarray(lines, dtype=np.int64)


def structural_problems(source: Source, frame: pd.DataFrame) -> list[Problem]:
    """Problems found without decoding images: paths, missing files, zip duplicates."""
    problems = [Problem(f"zip holds '{n}' more than once") for n in source.duplicate_names()]
    for row, values in enumerate(frame[list(COLUMNS)].itertuples(index=False)):
        for rel in values:
            why = bad_relpath(rel)
            if why is None and source.escapes_root(rel):
                why = "path leaves the dataset root (through a link)"
            if why is None and not source.exists(rel):
                why = "file not found"
            if why:
                problems.append(Problem(why, row, rel or None, source.line_of(row)))
    return problems


# --- decoding -----------------------------------------------------------------------------

# What decoding a bad file raises: PIL's errors, a stream cut short, a name not in a zip or a
# pack, and an image with more pixels than PIL.Image.MAX_IMAGE_PIXELS allows (PIL's guard
# against decompression bombs, which is no OSError). Each makes a bad row, as DataError.
UNREADABLE = (OSError, SyntaxError, ValueError, KeyError, Image.DecompressionBombError)
_BUFFER = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def unreadable(name: str | os.PathLike, exc: BaseException) -> DataError:
    """DataError for an image ``name`` (a file, or a member of a zip or pack) that cannot be
    decoded: PIL's message names the in-memory buffer it read, not the file; left out."""
    reason = _BUFFER.sub("", str(exc)).strip() or type(exc).__name__
    return DataError(f"{name}: not a readable image ({reason})")


def _decoded_rgb(image: Image.Image, size: int | None) -> Image.Image:
    """The image in RGB; a JPEG decoded at the smallest reduced scale that keeps ``size``."""
    if size is not None and image.format == "JPEG":
        image.draft("RGB", (size, size))
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if image.mode == "P" else image.convert("RGB")
    return image


def _resized(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, C) uint8 or (C, H, W) float32 planes at ``width`` × ``height``: bilinear, with
    PIL's antialiasing when shrinking (torch's kernel: the same values within one level of
    uint8, at two to three times PIL's speed, which decoding the cache spends most time in)."""
    import torch
    from torch.nn.functional import interpolate

    channels_last = planes.dtype == np.uint8
    x = torch.from_numpy(np.require(planes, requirements=["C", "W"]))  # torch wants writable
    x = (x.permute(2, 0, 1) if channels_last else x)[None]
    y = interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return (y[0].permute(1, 2, 0) if channels_last else y[0]).contiguous().numpy()


def _fitted(image: Image.Image, size: int | None) -> np.ndarray:
    values = np.asarray(image)
    if size is not None and values.shape[:2] != (size, size):
        values = _resized(values, size, size)
    return values


def _rgb(image: Image.Image, size: int | None) -> np.ndarray:
    """(H, W, 3) uint8; JPEGs are decoded at reduced scale when much larger than ``size``."""
    return _fitted(_decoded_rgb(image, size), size)


def _reducible(shape: tuple[int, int], size: int | None) -> bool:
    """Whether a JPEG of ``shape`` could decode at a reduced scale for ``size``: only when
    halving it keeps both sides at ``size`` or more."""
    return size is not None and min(shape) >= 2 * size


def _rgb_sizes(data: bytes, sizes: list[int | None]) -> dict[int | None, np.ndarray]:
    """``_rgb`` of one encoded image at each of ``sizes``, decoded once per JPEG scale (the
    sizes that allow the same reduced scale share a decode): the same arrays as separate
    calls, at a fraction of the cost."""
    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG" or not any(_reducible(image.size, size) for size in sizes):
        decoded = _decoded_rgb(image, sizes[0])  # one decode at full scale serves every size
        return {size: _fitted(decoded, size) for size in sizes}
    groups: dict[tuple, list] = {}
    for size in sizes:
        probe = Image.open(io.BytesIO(data))
        if size is not None and probe.format == "JPEG":
            probe.draft("RGB", (size, size))  # sets the decode scale and size; decodes nothing
        groups.setdefault(probe.size, []).append(size)
    out = {}
    for group in groups.values():
        decoded = _decoded_rgb(Image.open(io.BytesIO(data)), group[0])
        out.update({size: _fitted(decoded, size) for size in group})
    return out


def read_rgb(source: Source, rel: str, size: int | None = None) -> np.ndarray:
    """One RGB image as (H, W, 3) uint8, resized to ``size``×``size`` when given."""
    return read_rgb_sizes(source, rel, [size])[size]


def read_rgb_sizes(source: Source, rel: str, sizes: list[int | None]) -> dict:
    """``read_rgb`` at each of ``sizes``: the file read once, decoded once per JPEG scale."""
    try:
        return _rgb_sizes(source.read(rel), sizes)
    except UNREADABLE as exc:
        raise unreadable(rel, exc) from exc


def _depth_scale(image: Image.Image) -> float:
    if image.mode.startswith("I;16") or image.mode == "I":
        return 65535.0
    if image.mode == "F":
        return 1.0
    return 255.0


# a colour image is read as depth when its channels are this close (JPEG noise), else refused
GREY_TOLERANCE = 8


def _grey(image: Image.Image) -> Image.Image:
    """A colour image whose channels are equal as one channel; DataError when they differ
    (a colour-mapped depth would otherwise be read as luminance: wrong values, silently)."""
    if image.mode in ("1", "LA", "La"):
        return image.convert("L")
    rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    if np.abs(rgb - rgb[..., :1]).max(initial=0) > GREY_TOLERANCE:
        raise DataError(
            f"a colour image ({image.mode}) whose channels differ, e.g. a colour-mapped depth: "
            "depth must be one channel (8- or 16-bit grey)"
        )
    return Image.fromarray(rgb[..., 0].astype(np.uint8))


def _single_channel(image: Image.Image, depth: bool = False) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 8-bit / 255, 16-bit / 65535, float as is. A colour
    ``depth`` is read only when its channels are equal (see ``_grey``)."""
    if image.mode not in ("L", "I", "F") and not image.mode.startswith("I;16"):
        image = _grey(image) if depth else image.convert("L")
    scale = _depth_scale(image)
    values = np.asarray(image).astype(np.float32) / scale
    return np.clip(values, 0.0, 1.0)


def _resize_float(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """(C, H, W) float32 planes at ``width`` × ``height`` (see ``_resized``)."""
    if planes.shape[1:] == (height, width):
        return planes
    return _resized(planes, width, height)


@dataclass
class Sample:
    """One decoded sample: fg_bg, bg (H, W, 3) uint8; mask (H, W) bool; depth (H, W) float32
    (None where not decoded: see ``read_sample_sizes``)."""

    fg_bg: np.ndarray | None
    bg: np.ndarray | None
    mask: np.ndarray | None
    depth: np.ndarray | None


def read_sample(
    source: Source, row: pd.Series | dict, size: int | None = None, decode_bg: bool = True
) -> Sample:
    """Decode one manifest row, at ``size``×``size`` or at fg_bg's own size when None.

    Raises DataError (naming the file) for an unreadable image or a bg/fg_bg size mismatch.
    With ``decode_bg=False`` only bg's header is read (for the size check); ``bg`` is None.
    """
    return read_sample_sizes(source, row, [size], decode_bg)[size]


def read_sample_sizes(
    source: Source,
    row: pd.Series | dict,
    sizes: list[int | None],
    decode_bg: bool = True,
    inputs: list[int | None] | None = None,
    targets: list[int | None] | None = None,
) -> dict[int | None, Sample]:
    """``read_sample`` at each of ``sizes``: each file is read once and decoded once per
    JPEG reduction scale, and the results are the same as separate calls.

    ``inputs`` / ``targets`` (default: all of ``sizes``) limit the sizes at which fg_bg and
    bg / mask and depth are made; the others are None in that size's Sample."""
    inputs = list(sizes) if inputs is None else inputs
    targets = list(sizes) if targets is None else targets
    images, data = {}, {}
    for col in COLUMNS:
        rel = row[col]
        try:
            data[col] = source.read(rel)
            images[col] = Image.open(io.BytesIO(data[col]))
        except UNREADABLE as exc:
            raise unreadable(rel, exc) from exc
    if images["fg_bg"].size != images["bg"].size:
        raise DataError(
            f"{row['bg']}: size {images['bg'].size} differs from fg_bg {row['fg_bg']}"
            f" {images['fg_bg'].size}"
        )
    out = {}
    for col in COLUMNS:
        try:
            if col == "bg" and not decode_bg:
                out[col] = {}
            elif col in ("fg_bg", "bg"):
                out[col] = _rgb_sizes(data[col], inputs)
            elif targets:
                out[col] = _single_channel(images[col], depth=col == "depth")
        except DataError as exc:
            raise DataError(f"{row[col]}: {exc}") from exc
        except UNREADABLE as exc:
            raise unreadable(row[col], exc) from exc
    samples = {}
    for size in sizes:
        mask = depth = None
        if size in targets:  # fg_bg's size: square at a given size, else its own
            width, height = (size, size) if size is not None else images["fg_bg"].size
            mask, depth = _targets_at(out["mask"], out["depth"], width, height)
        samples[size] = Sample(out["fg_bg"].get(size), out["bg"].get(size), mask, depth)
    return samples


def _targets_at(mask: np.ndarray, depth: np.ndarray, width: int, height: int):
    """The mask (bool, over half) and depth at ``width`` × ``height``; resized in one call
    when the two have the same size."""
    if mask.shape == depth.shape:
        mask, depth = _resize_float(np.stack([mask, depth]), width, height)
    else:
        mask = _resize_float(mask[None], width, height)[0]
        depth = _resize_float(depth[None], width, height)[0]
    return mask > (127.0 / 255.0), depth
