"""Bad rows and bad datasets are named as the user knows them: the manifest's real line, the
file or zip member, the pack format found and the one expected."""

import json
import zipfile

import pytest
from PIL import Image

from fgdepth.data import DataError, open_dataset
from fgdepth.data.cache import build_cache
from fgdepth.data.format import Source, read_sample
from fgdepth.data.images import open_image
from fgdepth.data.inspect import inspect_dataset
from fgdepth.data.pack import PACK_FORMAT
from tests.conftest import write_dataset


@pytest.fixture
def small_pixel_limit(monkeypatch):
    """PIL refuses (DecompressionBombError) an image of more than twice this many pixels: the
    hand-made images (40x30) are over it, as a 16000x16000 image is over the default."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)


def test_an_image_over_the_pixel_limit_is_a_bad_row(tmp_path, small_pixel_limit):
    root = write_dataset(tmp_path / "ds", rows=3)
    dataset = open_dataset(root)
    with pytest.raises(DataError, match=r"^fg0.jpg: not a readable image \(Image size"):
        read_sample(dataset.source, dataset.rows.iloc[0])
    summary, problems = inspect_dataset(root)
    assert [(p.row, p.file) for p in problems] == [(0, "fg0.jpg"), (1, "fg1.jpg"), (2, "fg2.jpg")]
    assert "decompression bomb" in problems[0].message
    cache = build_cache(dataset, 16, skip_bad=True, quiet=True)
    assert {p.row for p in cache.bad} == {0, 1, 2}
    with pytest.raises(DataError, match=r"bg0.png: not a readable image \(Image size \(1200"):
        open_image(root / "bg0.png")


def test_a_zip_member_that_is_no_image_is_named_not_its_buffer(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=2)
    (root / "m1.png").write_text("not an image")
    packed = tmp_path / "ds.zip"
    with zipfile.ZipFile(packed, "w") as z:
        for path in sorted(root.iterdir()):
            z.write(path, path.name)
    summary, problems = inspect_dataset(packed)
    assert [str(p) for p in problems] == [
        "manifest.csv line 3: m1.png: not a readable image (cannot identify image file)"
    ]
    with pytest.raises(DataError) as err:
        open_image(b"not an image")
    assert str(err.value) == "image bytes: not a readable image (cannot identify image file)"


def test_problems_name_the_manifests_real_lines_past_blank_ones(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=3)
    header, *rows = (root / "manifest.csv").read_text().splitlines()
    # lines: 1 header, 2 row 0, 3 blank, 4 row 1, 5 spaces only, 6 row 2
    (root / "manifest.csv").write_text("\n".join([header, rows[0], "", rows[1], "  ", rows[2]]))
    (root / "d1.png").unlink()
    (root / "m2.png").write_text("not an image")
    summary, problems = inspect_dataset(root)
    assert [str(p) for p in problems] == [
        "manifest.csv line 4: d1.png: file not found",
        "manifest.csv line 6: m2.png: not a readable image (cannot identify image file)",
    ]
    with pytest.raises(DataError, match="manifest.csv line 4: d1.png: file not found"):
        open_dataset(root)
    assert Source(root).line_of(1) == 3  # before the manifest is read: the plain count


def test_a_pack_of_another_format_names_both_formats(tmp_path):
    old = tmp_path / "packed"
    old.mkdir()
    (old / "pack.json").write_text(json.dumps({"format": "fgdepth-pack-0", "shards": []}))
    (old / "manifest.csv").write_text("fg_bg,bg,mask,depth\n")
    with pytest.raises(DataError) as err:
        open_dataset(old)
    assert f"format 'fgdepth-pack-0'; this fgdepth reads '{PACK_FORMAT}'" in str(err.value)
    (old / "pack.json").write_text("{not json")
    with pytest.raises(DataError, match="pack.json: not readable as a pack's description"):
        open_dataset(old)
