"""``open_dataset`` and ``Dataset``: splits, bad rows, backgrounds, samples and fingerprints."""

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fgdepth.config import DataConfig
from fgdepth.data import DataError, open_dataset
from fgdepth.data.splits import check_fractions
from tests.conftest import write_dataset


@pytest.fixture
def root(tmp_path):
    """Six hand-made rows at 40 x 30, one background each; split column train/val/test/..."""
    return write_dataset(tmp_path / "ds", rows=6)


def _edit_manifest(root, edit) -> None:
    path = root / "manifest.csv"
    frame = pd.read_csv(path, dtype=str)
    edit(frame)
    frame.to_csv(path, index=False)


def test_the_split_column_gives_each_rows_split(root):
    ds = open_dataset(root)
    assert len(ds) == 6 and ds.path == root
    assert list(ds.split) == ["train", "val", "test"] * 2
    assert list(ds.indices("train")) == [0, 3]
    assert list(ds.indices("val")) == [1, 4] and list(ds.indices("test")) == [2, 5]
    assert list(ds.indices()) == [0, 1, 2, 3, 4, 5]


def test_without_a_split_column_no_background_is_in_two_splits(root):
    _edit_manifest(root, lambda f: f.pop("split"))
    ds = open_dataset(root, DataConfig(test=0.5, val=0.0, split_seed=1))
    assert set(ds.split) == {"train", "test"}
    by_background = pd.Series(ds.split).groupby(ds.backgrounds()).nunique()
    assert (by_background == 1).all()
    again = open_dataset(root, DataConfig(test=0.5, val=0.0, split_seed=1))
    assert list(again.split) == list(ds.split)


def test_rows_on_one_background_share_its_index_and_group(root):
    def share(frame):
        frame.loc[[1, 2], "bg"] = "bg0.png"
        frame.loc[4, "bg"] = "bg3.png"

    _edit_manifest(root, share)
    ds = open_dataset(root)
    assert list(ds.backgrounds()) == [0, 0, 0, 1, 1, 2]  # in order of first appearance
    assert ds.backgrounds().dtype == np.int32
    assert list(ds.groups()) == ["bg0.png"] * 3 + ["bg3.png"] * 2 + ["bg5.png"]


def test_a_bg_id_column_says_which_rows_share_a_background(root):
    _edit_manifest(root, lambda f: f.insert(0, "bg_id", ["a", "b", "a", "b", "a", "c"]))
    assert list(open_dataset(root).groups()) == ["a", "b", "a", "b", "a", "c"]


def test_a_sample_is_decoded_at_its_own_size_or_a_square_size(root):
    ds = open_dataset(root)
    own = ds.sample(2)
    assert own.fg_bg.shape == own.bg.shape == (30, 40, 3) and own.fg_bg.dtype == np.uint8
    assert own.mask.shape == own.depth.shape == (30, 40)
    assert own.mask.dtype == bool and own.depth.dtype == np.float32
    assert own.mask[10, 10] and not own.mask[25, 35]  # the square of write_dataset
    assert own.depth == pytest.approx(128 / 255)
    np.testing.assert_array_equal(own.bg, np.asarray(Image.open(root / "bg2.png")))
    square = ds.sample(np.int64(2), size=16)
    assert square.fg_bg.shape == (16, 16, 3) and square.mask.shape == (16, 16)


def test_the_source_side_is_the_side_of_a_square_of_as_many_pixels(root):
    assert open_dataset(root).source_side() == 34  # isqrt(40 * 30)


def test_an_unreadable_first_image_is_one_line_naming_it(root):
    ds = open_dataset(root)
    (root / "fg0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"^fg0\.jpg: not a readable image \("):
        ds.source_side()


def test_the_fingerprint_is_stable_and_follows_the_files(root):
    first = open_dataset(root).fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0  # a sha256
    assert open_dataset(root).fingerprint() == first
    stat = (root / "d4.png").stat()
    os.utime(root / "d4.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = open_dataset(root).fingerprint()
    assert touched != first
    _edit_manifest(root, lambda f: f.insert(5, "note", "x"))
    assert open_dataset(root).fingerprint() not in (first, touched)


def test_bad_rows_stop_the_opening_in_one_line_counting_the_others(root):
    (root / "fg1.jpg").unlink()
    (root / "d4.png").unlink()
    with pytest.raises(DataError) as caught:
        open_dataset(root)
    assert str(caught.value) == (
        f"{root}: manifest.csv line 3: fg1.jpg: file not found "
        f"(and 1 more; see `fgdepth data inspect {root}`)"
    )


def test_skipped_rows_stay_in_the_manifest_and_leave_every_split(root):
    (root / "fg1.jpg").unlink()
    (root / "d4.png").unlink()
    ds = open_dataset(root, skip_bad=True)
    assert len(ds) == 6 and [(p.row, p.file) for p in ds.skipped] == [(1, "fg1.jpg"),
                                                                      (4, "d4.png")]  # fmt: skip
    assert list(ds.split) == ["train", "val", "test"] * 2  # the splits do not move
    assert list(ds.indices("val")) == [] and list(ds.indices()) == [0, 2, 3, 5]


def test_no_usable_row_is_refused_even_when_skipping(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=2)
    (root / "m0.png").unlink()
    (root / "bg1.png").unlink()
    with pytest.raises(DataError, match=f"^{root}: no usable rows$"):
        open_dataset(root, skip_bad=True)


def test_a_problem_with_the_whole_dataset_is_not_skipped(tmp_path):
    with pytest.raises(DataError, match="manifest.csv not found at the dataset root"):
        open_dataset(tmp_path, skip_bad=True)
    with pytest.raises(DataError, match="leave no train part"):
        check_fractions(DataConfig(test=0.6, val=0.5))


LOG_1_40 = "depth: {encoding: log, near: 1, far: 40}\n"


def test_the_depth_encoding_is_what_dataset_yaml_declares(root):
    from fgdepth.data.units import DepthEncoding

    assert open_dataset(root).depth_encoding is None  # no dataset.yaml: 0..1 only
    (root / "dataset.yaml").write_text("depth: {encoding: inverse, near: 0.5, far: 80}\n")
    assert open_dataset(root).depth_encoding == DepthEncoding("inverse", 0.5, 80.0)


def test_the_built_in_data_declares_its_encoding_in_a_folder_and_a_zip(synth_dir, synth_zip):
    for path in (synth_dir, synth_zip):
        assert str(open_dataset(path).depth_encoding) == "log 1-40 m"


@pytest.mark.parametrize("top_folder", ["", "ds/"])
def test_a_zip_declares_it_beside_its_manifest(root, tmp_path, top_folder):
    import zipfile

    (root / "dataset.yaml").write_text(LOG_1_40)
    archive = tmp_path / "ds.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.iterdir()):
            z.write(path, top_folder + path.name)
    assert str(open_dataset(archive).depth_encoding) == "log 1-40 m"


def test_a_malformed_dataset_yaml_is_one_line_naming_it(root):
    (root / "dataset.yaml").write_text("depth: {encoding: log, near: 40, far: 1}\n")
    with pytest.raises(DataError) as caught:
        open_dataset(root)
    message = str(caught.value)
    assert message == f"{root}: dataset.yaml: depth: log needs 0 < near < far (got near 40, far 1)"
