"""``fgdepth predict``: image pairs in; mask, depth and the foreground's distance out."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from fgdepth.app.cli import main
from fgdepth.data.preview import colour_depth
from fgdepth.engine.checkpoint import save_checkpoint
from fgdepth.predict import open_image, predict_files, predict_pairs


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


@pytest.fixture
def predict_cli(capsys):
    """``fgdepth predict ARGS``, run in this process: its exit code, stdout and stderr."""

    def run(*args):
        code = main(["predict", *args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_predict_writes_the_pictures_and_prints_the_distance(
    predict_cli, checkpoint, synth_dir, tmp_path
):
    import pandas as pd

    row = pd.read_csv(synth_dir / "manifest.csv").iloc[0]
    out = tmp_path / "pred"
    done = predict_cli("--model", str(checkpoint), "--bg", str(synth_dir / row["bg"]),
                "--fgbg", str(synth_dir / row["fg_bg"]), "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    size = Image.open(synth_dir / row["fg_bg"]).size
    mask, depth = Image.open(out / "mask.png"), Image.open(out / "depth.png")
    assert mask.size == depth.size == size
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert depth.mode.startswith("I")
    assert_pictures_agree(out, size)
    assert result["distance"] is None or 0 <= result["distance"] <= 1  # null: no foreground


def assert_pictures_agree(out, size):
    """depth_colour.png is depth.png in the project's colour ramp, with a colour bar on its
    right; mask_soft.png thresholded is mask.png. Every picture decodes at the input's size
    (depth_colour.png: the input's height, and wider by its bar)."""
    pictures = {}
    for name in ("mask", "mask_soft", "depth", "depth_colour"):
        with Image.open(out / f"{name}.png") as image:
            image.load()
            assert image.format == "PNG", name
            if name == "depth_colour":
                assert image.size[1] == size[1] and image.size[0] > size[0]
            else:
                assert image.size == size, name
            pictures[name] = image
    assert pictures["depth_colour"].mode == "RGB" and pictures["mask_soft"].mode == "L"
    depth = np.asarray(pictures["depth"]).astype(np.float32) / 65535
    colour = np.asarray(pictures["depth_colour"])[:, : size[0]].astype(int)
    # depth.png is rounded to 16 bits: a colour channel may land one step away
    assert np.abs(colour - colour_depth(depth).astype(int)).max() <= 1
    mask, soft = np.asarray(pictures["mask"]), np.asarray(pictures["mask_soft"])
    np.testing.assert_array_equal(soft >= 128, mask == 255)  # probability above 0.5


def test_the_pictures_show_the_known_prediction(tmp_path):
    a = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(a)
    predict_files(KnownOutput(), 32, a, a, tmp_path / "out")
    out = tmp_path / "out"
    assert_pictures_agree(out, (32, 32))
    inside, outside = (slice(8, 16), slice(8, 16)), (slice(20, 32), slice(0, 32))
    depth = np.asarray(Image.open(out / "depth.png"))
    assert (depth[inside] == 16384).all() and (depth[outside] == 49151).all()  # 0.25, 0.75
    soft = np.asarray(Image.open(out / "mask_soft.png"))
    assert (soft[inside] == 255).all() and (soft[outside] == 0).all()  # sigmoid(+-8)
    colour = np.asarray(Image.open(out / "depth_colour.png"))
    # the ramp runs from far (0: dark blue) to near (1, brighter in depth.png: yellow);
    # 0.25 and 0.75 fall on its second and fourth stops (a float32 sigmoid: within a step)
    assert np.abs(colour[inside].astype(int) - (126, 3, 168)).max() <= 1
    assert np.abs(colour[outside].astype(int) - (248, 149, 64)).max() <= 1
    assert colour[outside].astype(int).sum(-1).min() > colour[inside].astype(int).sum(-1).max()


def test_predict_takes_a_manifest_of_pairs(predict_cli, checkpoint, synth_dir, tmp_path):
    import pandas as pd

    rows = pd.read_csv(synth_dir / "manifest.csv").iloc[:3][["bg", "fg_bg"]]
    pairs = tmp_path / "pairs.csv"
    rows.to_csv(pairs, index=False)  # paths are relative to the manifest: not there
    out = tmp_path / "batch"
    rows.map(lambda rel: str(synth_dir / rel)).to_csv(pairs, index=False)
    done = predict_cli("--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 3 and all((out / name / "mask.png").exists() for name in table["name"])
    assert list(table["status"]) == ["ok"] * 3


def _manifest_with_a_bad_second_row(synth_dir, tmp_path):
    import pandas as pd

    rows = pd.read_csv(synth_dir / "manifest.csv").iloc[:3][["bg", "fg_bg"]]
    rows = rows.map(lambda rel: str(synth_dir / rel))
    rows.iloc[1, 1] = "missing.jpg"  # relative to the manifest: not there
    rows.to_csv(tmp_path / "pairs.csv", index=False)
    return tmp_path / "pairs.csv"


def test_a_bad_manifest_row_is_recorded_and_the_others_predicted(checkpoint, synth_dir, tmp_path):
    import pandas as pd

    pairs, out = _manifest_with_a_bad_second_row(synth_dir, tmp_path), tmp_path / "batch"
    code = main(
        ["predict", "--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out)]
    )
    assert code == 1
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table["status"][[0, 2]]) == ["ok", "ok"]
    assert table["status"][1] == f"{tmp_path / 'missing.jpg'}: no such image file"
    assert table["distance"][1] == "" and (out / table["name"][2] / "mask.png").exists()


def test_stop_on_error_stops_at_the_bad_row_naming_its_line(
    checkpoint, synth_dir, tmp_path, capsys
):
    import pandas as pd

    pairs, out = _manifest_with_a_bad_second_row(synth_dir, tmp_path), tmp_path / "batch"
    args = ["--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out)]
    assert main(["predict", *args, "--stop-on-error"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fgdepth: {pairs} line 3: {tmp_path / 'missing.jpg'}: no such image file"]
    table = pd.read_csv(out / "predictions.csv")
    assert list(table["status"] == "ok") == [True, False]  # the first row, then the bad one


def test_a_bad_rows_line_counts_the_blank_lines_before_it(checkpoint, synth_dir, tmp_path, capsys):
    pairs, out = _manifest_with_a_bad_second_row(synth_dir, tmp_path), tmp_path / "batch"
    header, first, second, third = pairs.read_text().splitlines()
    pairs.write_text("\n".join([header, first, "", " , ", second, third]) + "\n")
    args = ["--model", str(checkpoint), "--manifest", str(pairs), "--out", str(out)]
    assert main(["predict", *args, "--stop-on-error"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fgdepth: {pairs} line 5: {tmp_path / 'missing.jpg'}: no such image file"]


def test_no_distance_is_null_in_strict_json(tmp_path):
    model = KnownOutput()
    with torch.no_grad():
        model.p.fill_(-100.0)  # an empty mask
    a = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(a)
    row = predict_files(model, 32, a, a, tmp_path / "out")
    assert row["distance"] is None and '"distance": null' in json.dumps(row, allow_nan=False)


def _random_bytes(path):
    path.write_bytes(bytes(range(256)) * 8)


def _other_torch_file(path):
    torch.save({"weights": torch.zeros(3)}, path)


class _Code:
    def __reduce__(self):
        return (print, ("this ran",))


def _code(path):
    torch.save({"model": _Code()}, path)


def _folder(path):
    path.mkdir()


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    "make, message",
    [
        (_random_bytes, "model.pt: not a checkpoint (not a torch file)"),
        (_other_torch_file, "model.pt: not an fgdepth checkpoint"),
        (_code, "model.pt: refused: it holds code (print), which would run when it is loaded"),
        (_folder, "model.pt: is a folder, not a checkpoint file"),
    ],
)
def test_a_model_that_is_not_an_fgdepth_model_is_one_line(
    synth_dir, tmp_path, monkeypatch, capsys, command, make, message
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    model = tmp_path / "model.pt"
    make(model)
    image = str(synth_dir / "fg_bg" / "000000.jpg")
    args = {"predict": ["--bg", image, "--fgbg", image, "--out", str(tmp_path / "out")],
            "evaluate": ["--data", str(synth_dir)]}[command]  # fmt: skip
    assert main([command, "--model", str(model), *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fgdepth: {model}: {message.split(': ', 1)[1]}")
    assert "weights_only" not in captured.err and "this ran" not in captured.out


@pytest.mark.parametrize("size", ["-16", "8", "40"])
def test_predict_refuses_a_size_the_model_cannot_take(
    checkpoint, synth_dir, tmp_path, capsys, size
):
    image = str(synth_dir / "fg_bg" / "000000.jpg")
    args = ["--bg", image, "--fgbg", image, "--out", str(tmp_path / "out"), "--size", size]
    assert main(["predict", "--model", str(checkpoint), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"fgdepth: --size: {size} is not allowed (this model takes multiples of 16, 16 or more)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bg", "nope.png", "--fgbg", "nope.png"], "nope.png: no such image file"),
        (["--bg", "x.png"], "give both --bg and --fgbg"),
        ([], "give --bg and --fgbg, or --manifest"),
    ],
)
def test_bad_input_fails_with_one_line(predict_cli, checkpoint, tmp_path, args, message):
    done = predict_cli("--model", str(checkpoint), "--out", str(tmp_path), *args)
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


# --- the distance in metres ---------------------------------------------------------------

LOG_1_40 = {"encoding": "log", "near": 1.0, "far": 40.0}


def _constant_checkpoint(path, depth_encoding=None):
    """A checkpoint of a model that finds the whole image foreground at depth 0.5 (its heads'
    last weights zero: mask logit 8, depth logit 0), trained on data of ``depth_encoding``."""
    from fgdepth.models import build_model

    model = build_model("unet", width=8)
    with torch.no_grad():
        for head, bias in (("mask_head", 8.0), ("depth_head", 0.0)):
            getattr(model, head).out.weight.zero_()
            getattr(model, head).out.bias.fill_(bias)
    extra = {"depth_encoding": depth_encoding} if depth_encoding else {}
    return save_checkpoint(path, model, "unet", {"width": 8}, size=32, **extra)


def test_the_distance_is_told_in_metres_for_a_known_encoding(tmp_path):
    from fgdepth.data.units import parse
    from fgdepth.predict import distance_text

    a = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (90, 90, 90)).save(a)
    enc = parse(LOG_1_40)
    row = predict_files(KnownOutput(), 32, a, a, tmp_path / "out", enc)
    assert row["distance"] == pytest.approx(0.25, abs=1e-6)
    assert row["distance_m"] == pytest.approx(40 * (1 / 40) ** 0.25, abs=1e-3)  # 15.906 m
    assert distance_text(0.25, enc) == "15.91 m"
    assert distance_text(0.25) == "0.2500 (0..1 depth units; the data declared no encoding)"
    assert distance_text(float("nan"), enc) == "no foreground found"
    assert predict_files(KnownOutput(), 32, a, a, tmp_path / "o2")["distance_m"] is None


def test_predict_prints_metres_when_the_models_data_declared_its_encoding(predict_cli, tmp_path):
    a = tmp_path / "a.png"
    Image.new("RGB", (48, 32), (90, 90, 90)).save(a)
    model = _constant_checkpoint(tmp_path / "model.pt", LOG_1_40)
    out = tmp_path / "pred"
    done = predict_cli("--model", str(model), "--bg", str(a), "--fgbg", str(a), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"{a}: foreground distance 6.32 m"  # sqrt(1 * 40)
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["distance"] == 0.5 and result["distance_m"] == pytest.approx(40**0.5, abs=1e-4)
    assert Image.open(out / "depth_colour.png").size[0] > 48  # with its scale bar


def test_without_an_encoding_predict_says_the_distance_is_in_0_1_units(predict_cli, tmp_path):
    import pandas as pd

    a = tmp_path / "a.png"
    Image.new("RGB", (48, 32), (90, 90, 90)).save(a)
    pd.DataFrame({"bg": [str(a)], "fg_bg": [str(a)]}).to_csv(tmp_path / "pairs.csv", index=False)
    model = _constant_checkpoint(tmp_path / "model.pt")  # as checkpoints before encodings
    out = tmp_path / "batch"
    done = predict_cli("--model", str(model), "--manifest", str(tmp_path / "pairs.csv"),
                       "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    line = "foreground distance 0.5000 (0..1 depth units; the data declared no encoding)"
    assert done.stdout.splitlines()[0] == f"{a}: {line}"
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(table.columns) == ["name", "bg", "fg_bg", "status", "distance", "distance_m", "out"]
    assert table["distance"][0] == 0.5 and table["distance_m"][0] == ""  # unknown: empty
    with_encoding = _constant_checkpoint(tmp_path / "known.pt", LOG_1_40)
    done = predict_cli("--model", str(with_encoding), "--manifest", str(tmp_path / "pairs.csv"),
                       "--out", str(out))  # fmt: skip
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["distance_m"][0] == pytest.approx(6.3246, abs=1e-4)
