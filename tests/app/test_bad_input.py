"""Every command and sub-command, given bad input, says so in a line or two and exits non-zero:
never a traceback. Each case fails at the argument checks, before training or making data."""

import json
import shlex

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fgdepth.app.cli import main
from tests.conftest import write_dataset


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """Files the bad command lines name, made once: each is wrong in one way, or fine."""
    import numpy as np

    from fgdepth.engine.checkpoint import save_checkpoint
    from fgdepth.models import build_model

    root = tmp_path_factory.mktemp("inputs")
    (root / "notes.txt").write_text("not YAML, an image, a checkpoint nor a dataset\n")
    Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(root / "image.png")
    save_checkpoint(root / "model.pt", build_model("unet", width=8), "unet", {"width": 8}, size=32)
    write_dataset(root / "ds", rows=6)
    write_dataset(root / "ds1", rows=1)
    write_dataset(root / "ds_yaml", rows=6)
    (root / "ds_yaml" / "dataset.yaml").write_text("depth: {encoding: cubic, near: 1, far: 40}\n")
    (root / "old_pack").mkdir()
    (root / "old_pack" / "pack.json").write_text(json.dumps({"format": "fgdepth-pack-0"}))
    (root / "old_pack" / "manifest.csv").write_text("fg_bg,bg,mask,depth\n")
    (root / "uri_list.yaml").write_text("tracking_uri: [sqlite:///a.db, sqlite:///b.db]\n")
    (root / "inherit_list.yaml").write_text("inherit: [default, bce]\n")
    (root / "inherit_5.yaml").write_text("inherit: 5\n")
    names = ["notes.txt", "image.png", "model.pt", "ds", "ds1", "ds_yaml", "old_pack",
             "uri_list.yaml", "inherit_list.yaml", "inherit_5.yaml"]  # fmt: skip
    return {name.split(".")[0]: str(root / name) for name in names}


def _images_over_the_pixel_limit(monkeypatch):
    """PIL refuses an image of more than twice this many pixels (a "decompression bomb")."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)


def _every_trial_fails(monkeypatch):
    """Each trial's training diverges, at once: the study ends with no trial completed."""
    import fgdepth.app.tune as app_tune
    from fgdepth.engine import DivergenceError

    def diverge(self, config, trial):
        raise DivergenceError("the loss became NaN")

    monkeypatch.setattr(app_tune.TrialTrainer, "train", diverge)


SMOKE = "--profile smoke"
BAD_YAML = "dataset.yaml: depth.encoding: 'cubic' is not one of linear, inverse, log"
PAIR = "--bg {image} --fgbg {image} --out {tmp}/out"
# (command line, what its one line says); {tmp}: the test's folder, {name}: one of ``inputs``
CASES = {
    "no-command": ("", "the following arguments are required: command"),
    "unknown-command": ("bogus", "invalid choice: 'bogus'"),
    "synth-no-out": ("synth", "the following arguments are required: --out"),
    "synth-n-word": ("synth --out {tmp}/s --n many", "invalid int value: 'many'"),
    "synth-n-negative": ("synth --out {tmp}/s --n -5", "--n: -5 is not allowed (1 or more)"),
    "synth-workers-0": ("synth --out {tmp}/s --workers 0", "--workers: 0 is not allowed"),
    "synth-out-a-file": ("synth --out {notes}", "notes.txt: exists and is not a folder"),
    "synth-preview-not-an-image": ("synth --out {tmp}/s --preview grid", "--preview grid: not an"),
    "data-no-command": ("data", "the following arguments are required: data_command"),
    "inspect-missing": ("data inspect {tmp}/missing", "missing: no such dataset"),
    "inspect-text-file": ("data inspect {notes}", "notes.txt: not a dataset"),
    "inspect-workers-negative": ("data inspect {ds} --workers -1", "--workers: -1 is not"),
    "inspect-old-pack": (
        "data inspect {old_pack}",
        "format 'fgdepth-pack-0'; this fgdepth reads 'fgdepth-pack-1'",
    ),
    "inspect-image-over-pixel-limit": ("data inspect {ds1}", "decompression bomb"),
    "inspect-dataset-yaml-malformed": ("data inspect {ds_yaml}", BAD_YAML),
    "pack-missing": ("data pack {tmp}/missing --out {tmp}/p", "missing: no such dataset"),
    "pack-no-out": ("data pack {ds}", "the following arguments are required: --out"),
    "pack-rows-per-shard-0": ("data pack {ds} --out {tmp}/p --rows-per-shard 0", "1 or more"),
    "pack-rows-per-shard-negative": (
        "data pack {ds} --out {tmp}/p --rows-per-shard -3",
        "--rows-per-shard: -3 is not allowed",
    ),
    "pack-into-its-source": ("data pack {ds} --out {ds}/packed", "lies inside it"),
    "pack-old-pack": (
        "data pack {old_pack} --out {tmp}/p",
        "format 'fgdepth-pack-0'; this fgdepth reads 'fgdepth-pack-1'",
    ),
    "train-unknown-experiment": ("train --config bogus", "unknown experiment 'bogus'; valid:"),
    "train-set-no-value": (f"train {SMOKE} --set nonsense", "--set nonsense: expected KEY=VALUE"),
    "train-set-unknown-key": (f"train {SMOKE} --set optimizer.lrr=0.1", "lrr: unknown key"),
    "train-set-wrong-type": (f"train {SMOKE} --set batch_size=abc", "batch_size: expected"),
    "train-set-negative-count": (f"train {SMOKE} --set batch_size=-4", "batch_size: -4 is not"),
    "train-profile-unknown": ("train --profile huge", "invalid choice: 'huge'"),
    "train-seed-word": (f"train {SMOKE} --seed abc", "'abc' is not a whole number"),
    "train-max-minutes-nan": (f"train {SMOKE} --max-minutes nan", "--max-minutes: nan is not"),
    "train-data-missing": (f"train {SMOKE} --data {{tmp}}/missing", "no such dataset"),
    "train-dataset-yaml-malformed": (f"train {SMOKE} --data {{ds_yaml}}", BAD_YAML),
    "train-workers-0": (f"train {SMOKE} --workers 0", "--workers: 0 is not a number of"),
    "train-resume-empty": ("train --resume ''", "--resume '': not a run id"),
    "train-resume-a-path": ("train --resume {notes}", "not a run id"),
    "train-plan-steps-negative": (
        f"train {SMOKE} --plan --plan-steps -1",
        "--plan-steps: -1 is not allowed",
    ),
    "train-tracking-text-file": (
        f"train {SMOKE} --tracking {{notes}}",
        "notes.txt: a tracking config is a mapping",
    ),
    "train-tracking-uri-a-list": (
        f"train {SMOKE} --tracking {{uri_list}}",
        "tracking_uri: expected a string",
    ),
    "train-tracking-unknown": (f"train {SMOKE} --tracking nowhere", "valid: local, server"),
    "train-inherit-a-list": ("train --config {inherit_list}", "inherit: expected one experiment"),
    "train-inherit-a-number": ("train --config {inherit_5}", "inherit: expected one experiment"),
    "study-minutes-negative": ("study --minutes-per-run -1", "--minutes-per-run: -1.0 is not"),
    "study-minutes-nan": ("study --minutes-per-run nan", "--minutes-per-run: nan is not"),
    "study-minutes-word": ("study --minutes-per-run soon", "invalid float value: 'soon'"),
    "study-unknown-experiment": (
        f"study {SMOKE} --experiments bce,bogus",
        "unknown experiment 'bogus'",
    ),
    "study-seeds-repeated": ("study --seeds 0,0", "not a list of distinct seeds"),
    "study-bad-set": (f"study {SMOKE} --set nonsense", "--set nonsense: expected KEY=VALUE"),
    "study-max-minutes-negative": (f"study {SMOKE} --max-minutes -1", "max_minutes: -1.0 is not"),
    "study-tracking-text-file": (f"study {SMOKE} --tracking {{notes}}", "is a mapping"),
    "tune-unknown-experiment": ("tune --experiment bogus", "unknown experiment 'bogus'"),
    "tune-trials-0": (f"tune {SMOKE} --trials 0", "tune.trials: must be at least 1, got 0"),
    "tune-trials-negative": (f"tune {SMOKE} --trials -2", "tune.trials: must be at least 1"),
    "tune-pruner-unknown": (f"tune {SMOKE} --pruner bogus", "unknown 'bogus'"),
    "tune-workers-0": (f"tune {SMOKE} --workers 0", "--workers: 0 is not allowed (1 or more)"),
    "tune-heartbeat-negative": (f"tune {SMOKE} --heartbeat -5", "--heartbeat: -5 is not"),
    "tune-storage-unknown": (f"tune {SMOKE} --storage bogus://x", "storage 'bogus://x': use"),
    "tune-tracking-uri-a-list": (f"tune {SMOKE} --tracking {{uri_list}}", "expected a string"),
    "tune-train-best-unknown": ("tune --train-best huge", "invalid choice: 'huge'"),
    "tune-no-trial-completes": (
        f"tune {SMOKE} --trials 1 --data {{ds}} --storage sqlite:///{{tmp}}/optuna.db",
        "no trial completed (1 fail); no best configuration",
    ),
    "predict-no-model": ("predict --out {tmp}/out", "the following arguments are required"),
    "predict-model-missing": (
        f"predict --model {{tmp}}/missing.pt {PAIR}",
        "missing.pt: no such checkpoint file or MLflow model URI",
    ),
    "predict-model-text-file": (f"predict --model {{notes}} {PAIR}", "notes.txt: not a"),
    "predict-image-missing": (
        "predict --model {model} --bg {tmp}/no.png --fgbg {tmp}/no.png --out {tmp}/out",
        "no.png: no such image file",
    ),
    "predict-image-text-file": (
        "predict --model {model} --bg {notes} --fgbg {notes} --out {tmp}/out",
        "notes.txt: not a readable image (cannot identify image file)",
    ),
    "predict-image-over-pixel-limit": (
        f"predict --model {{model}} {PAIR}",
        "image.png: not a readable image (Image size (1536 pixels) exceeds limit",
    ),
    "predict-bg-only": ("predict --model {model} --bg {image} --out {tmp}/o", "give both --bg"),
    "predict-manifest-missing": (
        "predict --model {model} --manifest {tmp}/no.csv --out {tmp}/out",
        "no.csv: no such manifest",
    ),
    "predict-size-negative": (f"predict --model {{model}} {PAIR} --size -16", "--size: -16 is"),
    "predict-size-word": (f"predict --model {{model}} {PAIR} --size big", "invalid int value"),
    "report-rank-by-unknown": ("report --rank-by bogus", "--rank-by: unknown 'bogus'; valid:"),
    "report-rank-by-unknown-register": (
        "report --rank-by bogus --register best",
        "--rank-by: unknown 'bogus'; valid: score, mask_iou",
    ),
    "report-unknown-experiment": ("report --experiment nosuch", "no MLflow experiment named"),
    "report-empty-store": (  # MLFLOW_TRACKING_URI wins over the --tracking local default
        "report",
        "no finished training run in any experiment at sqlite:///{tmp}/mlflow.db",
    ),
    "report-tracking-text-file": ("report --tracking {notes}", "a tracking config is a mapping"),
    "evaluate-no-model": ("evaluate", "the following arguments are required: --model"),
    "evaluate-precision-unknown": (
        "evaluate --model {model} --precision banana",
        "argument --precision: invalid choice: 'banana'",
    ),
    "evaluate-split-unknown": ("evaluate --model {model} --split bogus", "invalid choice"),
    "evaluate-model-missing": ("evaluate --model {tmp}/missing.pt", "no such checkpoint file"),
    "evaluate-run-unknown": (
        "evaluate --model runs:/0123456789abcdef0123456789abcdef/model",
        "no such MLflow model",
    ),
    "evaluate-size-bad": ("evaluate --model {model} --size 7", "--size: 7 is not allowed"),
    "evaluate-no-config": ("evaluate --model {model}", "holds no config (give --data)"),
    "evaluate-data-missing": ("evaluate --model {model} --data {tmp}/no", "no: no such dataset"),
    "evaluate-dataset-yaml-malformed": ("evaluate --model {model} --data {ds_yaml}", BAD_YAML),
    "evaluate-test-fraction-bad": (
        "evaluate --model {model} --data {ds} --test 1.5",
        "data.test: 1.5 is not allowed (a fraction",
    ),
    "evaluate-test-fraction-nan": (
        "evaluate --model {model} --data {ds} --test nan",
        "data.test: nan is not allowed",
    ),
    "evaluate-split-seed-negative": (
        "evaluate --model {model} --data {ds} --split-seed -1",
        "data.split_seed: -1 is not allowed",
    ),
    "evaluate-test-fraction-word": ("evaluate --model {model} --test half", "invalid float"),
}
SETUPS = {
    "inspect-image-over-pixel-limit": _images_over_the_pixel_limit,
    "predict-image-over-pixel-limit": _images_over_the_pixel_limit,
    "tune-no-trial-completes": _every_trial_fails,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_short_message_not_a_traceback(case, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)  # whatever a command writes by default lands here
    if case in SETUPS:
        SETUPS[case](monkeypatch)
    line, message = CASES[case]
    argv = shlex.split(line.format(tmp=tmp_path, **inputs))
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, err
    assert "Traceback" not in err and "BytesIO" not in err, err
    assert 1 <= len(err.strip().splitlines()) <= 3, err
    assert message.format(tmp=tmp_path) in err, err
    assert not (tmp_path / "cache").exists(), "data was made before the arguments were checked"


@pytest.mark.parametrize("command", ["train --profile smoke --data", "evaluate --data"])
def test_a_malformed_dataset_yaml_is_one_line_and_exit_2(command, inputs, tmp_path, monkeypatch,
                                                          capsys):  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    argv = [*command.split(), inputs["ds_yaml"]]
    if argv[0] == "evaluate":
        argv += ["--model", inputs["model"]]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"fgdepth: {inputs['ds_yaml']}: {BAD_YAML}"]


def test_a_study_with_no_completed_trial_leaves_its_parent_run_failed(
    inputs, tmp_path, monkeypatch, capsys
):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    _every_trial_fails(monkeypatch)
    line, _ = CASES["tune-no-trial-completes"]
    assert main(shlex.split(line.format(tmp=tmp_path, **inputs))) == 2
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    parents = [r for r in client.search_runs(ids) if r.data.tags.get("fgdepth.kind") == "tune"]
    assert [r.info.status for r in parents] == ["FAILED"]
    assert "no trial completed" in parents[0].data.tags["fgdepth.failure"]
