"""Packed datasets: a dataset written as WebDataset tar shards, for many machines to read.

``fgdepth data pack PATH --out DIR`` writes ``DIR/shards/shard-NNNNNN.tar`` (WebDataset's
layout: a sample's files share a key, ``r000000123.fg_bg.jpg``, ``r000000123.mask.png``, ...;
each background is stored once, as ``g0000012.bg.jpg``), ``DIR/manifest.csv`` (the original
rows, their extra columns kept, so splits are the same, with the paths renamed to the shards'
members), its ``dataset.yaml`` when it has one, and an index of where each member's bytes lie
(``index/*.npy``).

Any tool that reads WebDataset shards reads these. fgdepth reads them through the index
(``PackReader``): a member is one positioned read from its shard, so a packed dataset is read
like a folder or a zip — the same rows in the same order by seed, epoch and ranks, resumable
at a row — while a node reads large files from shared storage instead of 10^6 small ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fgdepth.data.disk import OutputRefused, check_new_folder, write_errors_as
from fgdepth.data.units import DATASET_YAML
from fgdepth.errors import DataError

PACK_FORMAT = "fgdepth-pack-1"
PACK_FILE = "pack.json"
ROW_COLUMNS = ("fg_bg", "mask", "depth")  # one member per row each; bg once per background


def is_pack(path: Path) -> bool:
    return path.is_dir() and (path / PACK_FILE).is_file()


def _row_name(row: int, column: str, rel: str) -> str:
    return f"r{row:09d}.{column}{Path(rel).suffix.lower()}"


def _bg_name(bg: int, rel: str) -> str:
    return f"g{bg:07d}.bg{Path(rel).suffix.lower()}"


@dataclass
class Packed:
    out: Path
    shards: list[str]


@contextlib.contextmanager
def _tar(file):
    """A WebDataset TarWriter on ``file``. After a failed write it is closed at once, its
    error ignored: tarfile would otherwise write again, and complain, when collected."""
    import webdataset as wds  # noqa: PLC0415

    writer = wds.TarWriter(file, mtime=0)  # a fixed date: the same bytes every time
    try:
        yield writer
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        raise


def pack(dataset, out: Path, rows_per_shard: int = 10000) -> Packed:
    """Write ``dataset`` (an opened folder or zip) as shards under ``out``; returns them."""
    if rows_per_shard < 1:
        raise OutputRefused(f"--rows-per-shard: {rows_per_shard} is not allowed (1 or more)")
    check_new_folder(out, source=dataset.path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    rows, source = dataset.rows, dataset.source
    bg_of = dataset.backgrounds()
    n = len(rows)
    names = {col: [_row_name(i, col, r) for i, r in enumerate(rows[col])] for col in ROW_COLUMNS}
    bg_names: dict[int, str] = {}
    shards: list[str] = []
    for start in range(0, n, rows_per_shard):
        shard = f"shards/shard-{len(shards):06d}.tar"
        with write_errors_as(out / shard), open(out / shard, "wb") as f, _tar(f) as writer:
            for i in range(start, min(n, start + rows_per_shard)):
                sample = {"__key__": f"r{i:09d}"}
                for col in ROW_COLUMNS:
                    sample[names[col][i].split(".", 1)[1]] = source.read(rows[col].iloc[i])
                writer.write(sample)
                b = int(bg_of[i])
                if b not in bg_names:  # the background with the first row that uses it
                    bg_names[b] = _bg_name(b, rows["bg"].iloc[i])
                    bg = {
                        "__key__": f"g{b:07d}",
                        bg_names[b].split(".", 1)[1]: source.read(rows["bg"].iloc[i]),
                    }
                    writer.write(bg)
            writer.close()
        shards.append(shard)
    manifest = rows.copy()
    for col in ROW_COLUMNS:
        manifest[col] = names[col]
    manifest["bg"] = [bg_names[int(b)] for b in bg_of]
    _write_index(out, shards, n, len(bg_names))
    manifest.to_csv(out / "manifest.csv", index=False)
    if source.exists(DATASET_YAML):  # beside the manifest, as in the source
        (out / DATASET_YAML).write_bytes(source.read(DATASET_YAML))
    meta = {"format": PACK_FORMAT, "rows": n, "backgrounds": len(bg_names), "shards": shards,
            "source": str(dataset.path), "layout": "webdataset"}  # fmt: skip
    (out / PACK_FILE).write_text(json.dumps(meta, indent=1))
    return Packed(out, shards)


def _write_index(out: Path, shards: list[str], rows: int, backgrounds: int) -> None:
    """(shard, offset, size) of every member: rows (N, 3, 3) and backgrounds (B, 3)."""
    row_index = np.zeros((rows, len(ROW_COLUMNS), 3), np.int64)
    bg_index = np.zeros((backgrounds, 3), np.int64)
    for s, shard in enumerate(shards):
        with tarfile.open(out / shard) as tar:
            for m in tar.getmembers():
                where = (s, m.offset_data, m.size)
                if m.name.startswith("g"):
                    bg_index[int(m.name[1:8])] = where
                else:
                    column = m.name.split(".")[1]
                    row_index[int(m.name[1:10]), ROW_COLUMNS.index(column)] = where
    (out / "index").mkdir(exist_ok=True)
    np.save(out / "index" / "rows.npy", row_index)
    np.save(out / "index" / "backgrounds.npy", bg_index)


def _read_meta(root: Path) -> dict:
    """``pack.json``, checked: DataError for a file that is not JSON, and for a pack written in
    another format than this code's (naming both)."""
    try:
        meta = json.loads((root / PACK_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{root / PACK_FILE}: not readable as a pack's description ({exc})"
        ) from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != PACK_FORMAT:
        raise DataError(
            f"{root}: a packed dataset of format {found!r}; this fgdepth reads {PACK_FORMAT!r} "
            "(pack the original dataset again with `fgdepth data pack`)"
        )
    if not isinstance(meta.get("shards"), list):
        raise DataError(f"{root / PACK_FILE}: no list of shards")
    return meta


class PackReader:
    """Reads the members of a packed dataset by name, one positioned read each. Shard files
    are opened once per process (file descriptors do not survive a fork server)."""

    def __init__(self, root: Path):
        self.root = root
        meta = _read_meta(root)
        self.shards = meta["shards"]
        try:
            self._rows = np.load(root / "index" / "rows.npy", mmap_mode="r")
            self._bgs = np.load(root / "index" / "backgrounds.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{root}: a packed dataset whose index cannot be read ({exc})"
            ) from None
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __getstate__(self):
        return {"root": self.root}

    def __setstate__(self, state):
        self.__init__(state["root"])

    def where(self, name: str) -> tuple[int, int, int] | None:
        """(shard, offset, size) of a member, or None when the name is not one."""
        try:
            if name.startswith("g") and ".bg." in name:
                entry = self._bgs[int(name[1:8])]
            elif name.startswith("r"):
                entry = self._rows[int(name[1:10]), ROW_COLUMNS.index(name.split(".")[1])]
            else:
                return None
        except (ValueError, IndexError):
            return None
        shard, offset, size = (int(v) for v in entry)
        return (shard, offset, size) if offset else None

    def read(self, name: str) -> bytes:
        found = self.where(name)
        if found is None:
            raise KeyError(f"{name}: not in the packed dataset {self.root}")
        shard, offset, size = found
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.root / self.shards[shard], os.O_RDONLY)
        return os.pread(self._fds[shard], size, offset)
