"""``fgdepth predict``: image pairs in; mask, depth and the foreground's distance out."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fgdepth.engine.checkpoint import save_checkpoint
from fgdepth.predict import open_image, predict_pairs


class KnownOutput(nn.Module):
    """Mask logits positive in a square, depth 0.25 inside it and 0.75 outside."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, fg_bg, bg):
        b, _, h, w = fg_bg.shape
        mask = torch.full((b, 1, h, w), -8.0)
        mask[:, :, h // 4 : h // 2, w // 4 : w // 2] = 8.0
        depth = torch.full((b, 1, h, w), float(np.log(3)))  # sigmoid -> 0.75
        depth[:, :, h // 4 : h // 2, w // 4 : w // 2] = float(-np.log(3))  # sigmoid -> 0.25
        return mask + self.p, depth


def _pair(size=(48, 32)):
    bg = Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8))
    return bg, bg.copy()


def test_the_distance_is_the_median_depth_inside_the_predicted_mask():
    (pred,) = predict_pairs(KnownOutput(), [_pair()], size=32)
    assert pred.distance == pytest.approx(0.25, abs=1e-6)
    assert pred.mask.shape == (32, 48) and pred.depth.shape == (32, 48)  # the input's size
    assert pred.mask.any() and not pred.mask.all()


def test_an_empty_mask_gives_no_distance():
    model = KnownOutput()
    with torch.no_grad():
        model.p.fill_(-100.0)
    (pred,) = predict_pairs(model, [_pair()], size=32)
    assert np.isnan(pred.distance)


@pytest.fixture
def checkpoint(tmp_path):
    from fgdepth.models import build_model

    model = build_model("unet", width=8)
    return save_checkpoint(tmp_path / "model.pt", model, "unet", {"width": 8}, size=32)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fgdepth", "predict", *args], capture_output=True, text=True
    )


def test_predict_writes_the_pictures_and_prints_the_distance(checkpoint, synth_dir, tmp_path):
    import pandas as pd

    row = pd.read_csv(synth_dir / "manifest.csv").iloc[0]
    out = tmp_path / "pred"
    done = _cli("--model", str(checkpoint), "--bg", str(synth_dir / row["bg"]),
                "--fgbg", str(synth_dir / row["fg_bg"]), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    size = Image.open(synth_dir / row["fg_bg"]).size
    mask, depth = Image.open(out / "mask.png"), Image.open(out / "depth.png")
    assert mask.size == depth.size == size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert depth.mode.startswith("I") and (out / "depth_colour.png").exists()
    assert (out / "mask_soft.png").exists()
    assert result["distance"] != result["distance"] or 0 <= result["distance"] <= 1


def test_predict_takes_a_manifest_of_pairs(checkpoint, synth_dir, tmp_path):
    import pandas as pd

    rows = pd.read_csv(synth_dir / "manifest.csv").iloc[:3][["bg", "fg_bg"]]
    pairs = tmp_path / "pairs.csv"
    rows.to_csv(pairs, index=False)  # paths are relative to the manifest: not there
    out = tmp_path / "batch"
    done = _cli("--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out))
    assert done.returncode == 2 and "no such image file" in done.stderr
    rows.map(lambda rel: str(synth_dir / rel)).to_csv(pairs, index=False)
    done = _cli("--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 3 and all((out / name / "mask.png").exists() for name in table["name"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bg", "nope.png", "--fgbg", "nope.png"], "nope.png: no such image file"),
        (["--bg", "x.png"], "give both --bg and --fgbg"),
        ([], "give --bg and --fgbg, or --manifest"),
    ],
)
def test_bad_input_fails_with_one_line(checkpoint, tmp_path, args, message):
    done = _cli("--model", str(checkpoint), "--out", str(tmp_path), *args)
    assert done.returncode == 2
    assert done.stderr.strip() == f"fgdepth: {message}"


def test_a_size_mismatch_is_refused(tmp_path):
    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    Image.new("RGB", (32, 32)).save(a)
    Image.new("RGB", (40, 32)).save(b)
    from fgdepth.data.format import DataError

    with pytest.raises(DataError, match="differs"):
        predict_pairs(KnownOutput(), [(open_image(a), open_image(b))], 32)
