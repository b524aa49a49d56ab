"""The room family (benchmarks/room_data.py): depth from the scene's geometry, foregrounds at
the distance of the point they stand on, and size that does not give the distance."""

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import room_data  # noqa: E402


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    out = tmp_path_factory.mktemp("rooms") / "data"
    room_data.write(out, n=30, seed=5, workers=1, progress=False)
    with open(out / "manifest.csv", newline="") as f:
        return out, list(csv.DictReader(f))


def _metres(out: Path, name: str) -> np.ndarray:
    stored = np.asarray(Image.open(out / name)).astype(np.float64) / 65535
    return room_data.Z_FAR * (1 - stored)


def test_the_foreground_stands_at_the_distance_of_its_contact_point(rooms):
    out, rows = rooms
    assert len(rows) == 30
    below = []
    for row in rows:
        mask = np.asarray(Image.open(out / row["mask"])) > 127
        z = _metres(out, row["depth"])
        want = float(row["fg_distance_m"])
        # every part of the object carries the contact's z, within the +-1.5 % of its parts
        # and the 16-bit step (12 m / 65535, 0.2 mm)
        assert np.abs(z[mask] / want - 1).max() < 0.015 + 1e-3
        # the scene right under the object's lowest pixel is the surface it stands on: a
        # floor seen at a grazing angle changes depth from row to row, so a few per cent
        foot_row = np.flatnonzero(mask.any(axis=1)).max()
        cols = np.flatnonzero(mask[foot_row])
        if foot_row + 2 < mask.shape[0]:
            under = z[foot_row + 2, cols][~mask[foot_row + 2, cols]]
            if len(under):
                below.append(np.median(under) / want - 1)
    assert len(below) > 20
    assert np.median(np.abs(below)) < 0.05


def test_depth_is_not_one_ground_plane_and_size_does_not_give_the_distance(rooms):
    out, rows = rooms
    surfaces = {row["surface"] for row in rows}
    assert len(surfaces) >= 3, surfaces  # the floor, platforms, stairs, the ramp, furniture
    kinds = {row["kind"] for row in rows}
    assert len(kinds) >= 4, kinds
    # an object's pixel height is its real height over its distance: with real heights from
    # 0.25 to 1.9 m, pixel height alone leaves the distance open
    heights = np.array([float(r["fg_height_m"]) for r in rows])
    assert heights.max() / heights.min() > 3


def test_the_same_seed_gives_the_same_bytes_whatever_the_workers(rooms, tmp_path):
    out, rows = rooms
    again = room_data.write(tmp_path / "again", n=30, seed=5, workers=2, progress=False)
    assert (again / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    for name in (rows[0]["fg_bg"], rows[-1]["depth"], rows[-1]["mask"]):
        assert (again / name).read_bytes() == (out / name).read_bytes()


def test_writing_into_a_folder_with_files_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("a user's file")
    with pytest.raises(FileExistsError, match="not empty"):
        room_data.write(tmp_path, n=1, seed=0, workers=1, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "a user's file"


def test_fgdepth_reads_the_declared_encoding_as_the_rows_distances_in_metres(rooms):
    from fgdepth.data import open_dataset

    out, rows = rooms
    encoding = open_dataset(out).depth_encoding
    assert str(encoding) == "linear 0-12 m"
    row = rows[0]
    mask = np.asarray(Image.open(out / row["mask"])) > 127
    stored = np.asarray(Image.open(out / row["depth"])).astype(np.float64) / 65535
    metres = encoding.to_metres(np.median(stored[mask]))
    assert metres == pytest.approx(float(row["fg_distance_m"]), rel=0.016)  # parts: +-1.5 %
