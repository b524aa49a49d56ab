import zipfile

import numpy as np
import pytest
from PIL import Image

from fgdepth.data import DataError, open_dataset
from fgdepth.data.format import bad_relpath
from fgdepth.data.inspect import inspect_dataset
from tests.conftest import write_dataset


def test_hand_made_dataset_loads_with_documented_conventions(tmp_path):
    root = write_dataset(tmp_path / "ds", depth_mode="I;16", mask_size=(20, 15))
    ds = open_dataset(root)
    s = ds.sample(0)
    assert s.fg_bg.shape == (30, 40, 3) and s.bg.shape == (30, 40, 3)
    # mask and depth come at half resolution and are resized to fg_bg's size
    assert s.mask.shape == (30, 40) and s.depth.shape == (30, 40)
    assert s.depth.dtype == np.float32
    assert s.depth == pytest.approx(32767 / 65535, abs=1e-4)  # 16-bit: / 65535
    assert s.mask[10, 10] and not s.mask[25, 35]
    assert list(ds.split) == ["train", "val", "test"]  # the split column wins


def test_eight_bit_depth_divides_by_255_and_mask_threshold_is_127(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=1)
    Image.fromarray(np.array([[127, 128]], np.uint8)).resize((40, 30), Image.NEAREST).save(
        root / "m0.png"
    )
    s = open_dataset(root).sample(0)
    assert s.depth == pytest.approx(128 / 255, abs=1e-6)
    assert not s.mask[:, :20].any() and s.mask[:, 20:].all()


def test_a_grey_depth_saved_in_colour_reads_as_its_grey(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=1)
    grey = np.linspace(20, 240, 40).astype(np.uint8)[None, :].repeat(30, 0)
    Image.fromarray(grey).save(root / "d0.png")
    expected = open_dataset(root).sample(0).depth
    Image.fromarray(np.stack([grey] * 3, -1)).save(root / "d0.png")  # RGB, equal channels
    np.testing.assert_array_equal(open_dataset(root).sample(0).depth, expected)


def test_a_truncated_zip_says_so(tmp_path, synth_zip):
    cut = tmp_path / "cut.zip"
    cut.write_bytes(synth_zip.read_bytes()[: synth_zip.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        open_dataset(cut)
    assert str(err.value) == (
        f"{cut}: a truncated or corrupt zip (its table of contents cannot be read)"
    )
    with pytest.raises(DataError, match="missing.zip: no such dataset"):
        open_dataset(tmp_path / "missing.zip")


def test_folder_and_zip_give_identical_samples(synth_dir, synth_zip):
    a, b = open_dataset(synth_dir), open_dataset(synth_zip)
    assert len(a) == len(b) == 40
    for i in (0, 17, 39):
        for size in (None, 32):
            sa, sb = a.sample(i, size), b.sample(i, size)
            for key in ("fg_bg", "bg", "mask", "depth"):
                np.testing.assert_array_equal(getattr(sa, key), getattr(sb, key))


def test_extra_columns_are_kept(synth_dir):
    rows = open_dataset(synth_dir).rows
    assert {"bg_id", "kind", "fg_distance_m"} <= set(rows.columns)


@pytest.mark.parametrize(
    "path, reason",
    [
        ("../x.png", "leaves the dataset root"),
        ("a/../../x.png", "leaves the dataset root"),
        ("/etc/passwd", "absolute path"),
        ("C:/x.png", "absolute path"),
        ("a\\b.png", "use '/'"),
        ("", "empty path"),
    ],
)
def test_paths_outside_the_root_are_refused(path, reason):
    assert reason in bad_relpath(path)


def test_plain_relative_path_is_accepted():
    assert bad_relpath("fg_bg/0001/x.jpg") is None


def _break(root, what):
    manifest = root / "manifest.csv"
    lines = manifest.read_text().splitlines()
    if what == "no manifest":
        manifest.unlink()
    elif what == "missing column":
        manifest.write_text("\n".join(l.rsplit(",", 2)[0] for l in lines) + "\n")
    elif what == "missing file":
        (root / "fg1.jpg").unlink()
    elif what == "truncated":
        data = (root / "fg1.jpg").read_bytes()
        (root / "fg1.jpg").write_bytes(data[: len(data) // 2])
    elif what == "not an image":
        (root / "d1.png").write_text("hello")
    elif what == "size mismatch":
        Image.new("RGB", (10, 10)).save(root / "bg1.png")
    elif what == "escape":
        lines[2] = lines[2].replace("m1.png", "../m1.png")
        manifest.write_text("\n".join(lines) + "\n")
    elif what == "absolute":
        lines[2] = lines[2].replace("m1.png", str(root / "m1.png"))
        manifest.write_text("\n".join(lines) + "\n")
    elif what == "empty":
        manifest.write_text(lines[0] + "\n")
    elif what == "colour depth":  # a colour-mapped depth: red far, blue near
        ramp = np.linspace(0, 255, 40).astype(np.uint8)[None, :].repeat(30, 0)
        Image.fromarray(np.stack([255 - ramp, ramp // 2, ramp], -1)).save(root / "d1.png")


CASES = {
    "no manifest": "manifest.csv not found",
    "missing column": "lacks column(s) depth",
    "missing file": "manifest.csv line 3: fg1.jpg: file not found",
    "truncated": "fg1.jpg: not a readable image",
    "not an image": "d1.png: not a readable image",
    "size mismatch": "bg1.png: size (10, 10) differs from fg_bg",
    "escape": "manifest.csv line 3: ../m1.png: path leaves the dataset root",
    "absolute": "manifest.csv line 3:",
    "empty": "the dataset is empty",
    "colour depth": "d1.png: a colour image (RGB) whose channels differ, e.g. a colour-mapped",
}


@pytest.mark.parametrize("what", list(CASES))
def test_each_bad_input_has_its_message(tmp_path, what):
    root = write_dataset(tmp_path / "ds")
    _break(root, what)
    summary, problems = inspect_dataset(root)
    assert any(CASES[what] in str(p) for p in problems), [str(p) for p in problems]
    if what == "absolute":
        assert any("absolute path" in str(p) for p in problems)


def test_open_dataset_refuses_structural_problems_unless_skipping(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=6)
    (root / "fg1.jpg").unlink()
    with pytest.raises(DataError, match="manifest.csv line 3: fg1.jpg: file not found"):
        open_dataset(root)
    ds = open_dataset(root, skip_bad=True)
    assert [p.row for p in ds.skipped] == [1]
    assert 1 not in ds.indices()


def test_zip_with_duplicate_names_is_refused(tmp_path, synth_dir):
    out = tmp_path / "dup.zip"
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(synth_dir.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(synth_dir).as_posix())
        with pytest.warns(UserWarning, match="Duplicate name"):
            z.writestr("manifest.csv", (synth_dir / "manifest.csv").read_text())
    with pytest.raises(DataError, match="more than once"):
        open_dataset(out)


def test_zip_with_a_top_level_folder_is_read(tmp_path, synth_dir):
    out = tmp_path / "nested.zip"
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(synth_dir.rglob("*")):
            if p.is_file():
                z.write(p, "mydata/" + p.relative_to(synth_dir).as_posix())
    assert len(open_dataset(out)) == 40


def test_a_linked_folder_that_leaves_the_root_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=2)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "m1.png").rename(outside / "m1.png")
    (root / "linked").symlink_to(outside)
    manifest = root / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",m1.png,", ",linked/m1.png,"))
    _, problems = inspect_dataset(root)
    assert [str(p) for p in problems if "link" in str(p)] == [
        "manifest.csv line 3: linked/m1.png: path leaves the dataset root (through a link)"
    ]


def test_a_link_that_leaves_the_root_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", rows=2)
    outside = tmp_path / "secret.png"
    (root / "m1.png").rename(outside)
    (root / "m1.png").symlink_to(outside)
    _, problems = inspect_dataset(root)
    assert any(
        "manifest.csv line 3: m1.png: path leaves the dataset root (through a link)" == str(p)
        for p in problems
    ), [str(p) for p in problems]


def test_files_in_missing_folders_and_below_files_are_not_found(tmp_path):
    """Folders are listed once, not each file stat-ed: a missing folder, a path through a file
    and a file spelt with another case are each 'file not found' (on a case-sensitive disk)."""
    root = write_dataset(tmp_path / "ds", rows=4)
    manifest = root / "manifest.csv"
    text = manifest.read_text()
    text = text.replace(",m1.png,", ",nowhere/m1.png,").replace(",m2.png,", ",fg0.jpg/m2.png,")
    manifest.write_text(text.replace(",m3.png,", ",M3.PNG,"))
    _, problems = inspect_dataset(root)
    found = {p.row: (p.file, p.message) for p in problems}
    assert found[1] == ("nowhere/m1.png", "file not found")
    assert found[2] == ("fg0.jpg/m2.png", "file not found")
    if not (root / "M3.PNG").exists():  # case-sensitive file system
        assert found[3] == ("M3.PNG", "file not found")
    assert 0 not in found


def test_resizing_matches_pil_bilinear_within_a_level():
    """Decoding resizes with torch's antialiased bilinear kernel: PIL's filter, within one
    level of uint8 (and float rounding) when shrinking and when enlarging."""
    from PIL import Image

    from fgdepth.data.format import _resized

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)
    plane = rng.random((45, 60), dtype=np.float32)
    for side in (17, 32, 96):
        pil = np.asarray(Image.fromarray(rgb).resize((side, side), Image.BILINEAR)).astype(int)
        ours = _resized(rgb, side, side)
        assert ours.dtype == np.uint8 and ours.shape == (side, side, 3)
        assert np.abs(ours.astype(int) - pil).max() <= 1
        pil_f = np.asarray(Image.fromarray(plane, mode="F").resize((side, side), Image.BILINEAR))
        assert np.abs(_resized(plane[None], side, side)[0] - pil_f).max() < 1e-5
