"""``inspect_dataset``: a summary of every decoded row, and every problem at once."""

import pandas as pd
import pytest
from PIL import Image

from fgdepth.data.inspect import inspect_dataset
from tests.conftest import write_dataset


@pytest.fixture
def root(tmp_path):
    """Six hand-made rows at 40 x 30; a 15 x 10 foreground square; depth 128 / 255."""
    return write_dataset(tmp_path / "ds", rows=6)


def test_the_summary_of_a_hand_made_dataset_has_its_known_values(root):
    summary, problems = inspect_dataset(root)
    assert problems == []
    assert summary == {
        "path": str(root),
        "format": "folder",
        "samples": 6,
        "backgrounds": 6,
        "columns": ["fg_bg", "bg", "mask", "depth", "split"],
        "image_sizes": {"40x30": 6},
        "splits": {"train": 2, "val": 2, "test": 2},
        "foreground_fraction": 0.125,  # 15 x 10 of 40 x 30
        "depth_range": [round(128 / 255, 5), round(128 / 255, 5)],
        "depth_encoding": None,  # no dataset.yaml
        "problems": 0,
    }


def test_the_summary_of_a_generated_zip(synth_zip):
    summary, problems = inspect_dataset(synth_zip)
    assert problems == []
    assert summary["samples"] == 40 and summary["backgrounds"] == 5
    assert summary["format"] == "zip" and summary["image_sizes"] == {"64x64": 40}
    assert sum(summary["splits"].values()) == 40
    assert 0 < summary["foreground_fraction"] < 0.5
    lo, hi = summary["depth_range"]
    assert 0 <= lo < hi <= 1
    assert summary["depth_encoding"] == "log 1-40 m"  # its dataset.yaml, read inside the zip


def test_every_problem_is_found_at_once_in_row_order(root):
    (root / "d3.png").write_text("x")  # found by decoding
    Image.new("RGB", (10, 10)).save(root / "bg5.png")  # found by decoding: another size
    (root / "fg1.jpg").unlink()  # found without decoding
    summary, problems = inspect_dataset(root)
    assert [(p.row, p.file) for p in problems] == [(1, "fg1.jpg"), (3, "d3.png"), (5, "bg5.png")]
    assert str(problems[0]) == "manifest.csv line 3: fg1.jpg: file not found"
    assert str(problems[1]).startswith("manifest.csv line 5: d3.png: not a readable image (")
    assert str(problems[2]) == (
        "manifest.csv line 7: bg5.png: size (10, 10) differs from fg_bg fg5.jpg (40, 30)"
    )
    assert summary["problems"] == 3 and summary["samples"] == 6
    assert summary["image_sizes"] == {"40x30": 3}  # the rows that decoded


def test_the_statistics_leave_out_the_rows_with_problems(root):
    Image.new("L", (40, 30), 255).save(root / "m2.png")  # all foreground, depth 1.0
    Image.new("L", (40, 30), 255).save(root / "d2.png")
    whole, _ = inspect_dataset(root)
    assert whole["foreground_fraction"] == pytest.approx((5 * 150 + 1200) / 7200, abs=1e-5)
    assert whole["depth_range"] == [round(128 / 255, 5), 1.0]
    (root / "fg2.jpg").unlink()
    without, _ = inspect_dataset(root)
    assert without["foreground_fraction"] == 0.125
    assert without["depth_range"] == [round(128 / 255, 5), round(128 / 255, 5)]


def test_a_bad_split_column_is_a_problem_and_the_rest_is_still_summarised(root):
    path = root / "manifest.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[0, "split"] = "holdout"
    frame.to_csv(path, index=False)
    summary, problems = inspect_dataset(root, None)
    assert [str(p) for p in problems] == [
        "split column holds ['holdout']; allowed: train, val, test"
    ]
    assert summary["splits"] == {} and summary["image_sizes"] == {"40x30": 6}


def test_a_folder_without_a_manifest_is_one_problem_and_no_summary(tmp_path):
    summary, problems = inspect_dataset(tmp_path)
    assert summary == {}
    assert [str(p) for p in problems] == [f"{tmp_path}: manifest.csv not found at the dataset root"]
