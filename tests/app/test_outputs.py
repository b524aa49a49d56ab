"""A command never writes where it would lose a user's files: into a dataset, a non-empty
folder, the data it reads, or (through ``--resume``) a file outside its checkpoint folder.
Each case: exit 2, one line, nothing outside the command's own outputs changed."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from pathlib import Path

import pytest

from fgdepth.app.cli import main


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a digest of its bytes: what a refused command must keep."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _refused(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    return lines[0]


@pytest.fixture
def dataset(synth_dir, tmp_path) -> Path:
    """A user's dataset (a copy of the shared one, so that a failure cannot spoil others)."""
    return Path(shutil.copytree(synth_dir, tmp_path / "users"))


@pytest.mark.parametrize(
    "where, message",
    [
        ("{data}", "holds a dataset"),  # synth over a dataset: its manifest would be replaced
        ("{other}", "is not empty"),  # into a folder of someone's files
        ("{file}", "is not a folder"),
    ],
)
def test_synth_writes_only_a_new_or_empty_folder(capsys, tmp_path, dataset, where, message):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.png").write_bytes(b"mine too")
    before = _snapshot(tmp_path)
    out = where.format(data=dataset, other=tmp_path / "other", file=tmp_path / "notes.txt")
    line = _refused(capsys, ["synth", "--n", "8", "--out", out])
    assert message in line and out in line
    assert _snapshot(tmp_path) == before


def test_synth_does_not_replace_a_zip(capsys, tmp_path):
    target = tmp_path / "mine.zip"
    target.write_bytes(b"someone's zip")
    line = _refused(capsys, ["synth", "--n", "8", "--zip", "--out", str(target)])
    assert "exists; it is not replaced" in line
    assert target.read_bytes() == b"someone's zip"
    assert not (tmp_path / "mine.zip.parts").exists()


def test_synth_continues_an_unfinished_generation_of_the_same_arguments(tmp_path, capsys):
    from fgdepth.data.synth import PROGRESS

    out = tmp_path / "ds"
    assert main(["synth", "--n", "8", "--size", "32", "--out", str(out)]) == 0
    whole = _snapshot(out)
    (out / "manifest.csv").unlink()  # as if killed before its manifest: the record is there
    (out / PROGRESS).mkdir()
    from dataclasses import asdict

    from fgdepth.config import SynthConfig

    spec = SynthConfig(n=8, size=32, seed=0)
    (out / PROGRESS / "spec.json").write_text(__import__("json").dumps(asdict(spec)))
    assert main(["synth", "--n", "8", "--size", "32", "--out", str(out)]) == 0
    assert _snapshot(out) == whole
    line = _refused(capsys, ["synth", "--n", "9", "--size", "32", "--out", str(out)])
    assert "holds a dataset" in line


@pytest.mark.parametrize("inside", ["", "packed", "images/packed"])
def test_pack_never_writes_into_its_source(capsys, dataset, tmp_path, inside):
    before = _snapshot(tmp_path)
    out = dataset / inside if inside else dataset
    line = _refused(capsys, ["data", "pack", str(dataset), "--out", str(out)])
    assert "is the source" in line
    assert _snapshot(tmp_path) == before and not (dataset / "packed").exists()


def test_pack_refuses_a_non_empty_folder_and_a_bad_shard_size(capsys, dataset, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    before = _snapshot(tmp_path)
    assert "is not empty" in _refused(capsys, ["data", "pack", str(dataset), "--out", str(other)])
    for bad in ("0", "-5"):
        argv = ["data", "pack", str(dataset), "--out", str(tmp_path / "p"), "--rows-per-shard", bad]
        assert f"--rows-per-shard: {bad} is not allowed" in _refused(capsys, argv)
        assert not (tmp_path / "p").exists()
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("spec", ["../../victim", "{abs}", "{abs}/state.pt", "", "state.pt"])
def test_resume_takes_a_run_id_never_a_path(capsys, tmp_path, monkeypatch, spec):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "state.pt").write_bytes(b"a user's file, not ours")
    (tmp_path / "outputs" / "checkpoints" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "outputs" / "checkpoints" / "a")  # ../../victim reaches it
    before = _snapshot(tmp_path)
    line = _refused(capsys, ["train", "--resume", spec.format(abs=victim)])
    assert "not a run id" in line
    assert _snapshot(tmp_path) == before


def test_resume_of_a_run_not_in_the_store_is_one_line(capsys, tmp_path, monkeypatch):
    from fgdepth.config import Config
    from fgdepth.engine.checkpoint import StateCheckpoint

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    run_id = "0123456789abcdef0123456789abcdef"
    path = tmp_path / "outputs" / "checkpoints" / run_id / "state.pt"
    StateCheckpoint(path, {"run_id": run_id, "config": Config().to_dict()}).on_checkpoint({})
    line = _refused(capsys, ["train", "--resume", run_id])
    assert f"run {run_id} is not in the tracking store" in line


# --- every place a command writes: unusable, found in one line before any work ---------------

DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search"]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]
# (command line, environment, the name of what it writes at {out}: a folder, or a file named
# so); {out}: the unusable place; {ds}, {model}, {image}: usable inputs; {tmp}: the test's folder
SMOKE = "--profile smoke --no-system-metrics --data {ds}"
WRITERS = {
    "synth --out": ("synth --n 4 --size 32 --out {out}", {}, "new"),
    "synth --zip": ("synth --n 4 --size 32 --zip --out {out}", {}, "d.zip"),
    "synth --preview": ("synth --n 4 --size 32 --out {tmp}/s --preview {out}", {}, "grid.png"),
    "data pack --out": ("data pack {ds} --out {out}", {}, "new"),
    "predict --out": ("predict --model {model} --bg {image} --fgbg {image} --out {out}", {}, "new"),
    "train --checkpoint-dir": (f"train {SMOKE} --checkpoint-dir {{out}}", {}, "new"),
    "train FGDEPTH_CACHE": (f"train {SMOKE}", {"FGDEPTH_CACHE": "{out}"}, "new"),
    "train tracking store": (f"train {SMOKE}", {"MLFLOW_TRACKING_URI": "sqlite:///{out}"}, "m.db"),
    "study --out": (f"study {SMOKE} --experiments bce --out {{out}}", {}, "new"),
    "tune --out": (f"tune {SMOKE} --storage sqlite:///{{tmp}}/optuna.db --out {{out}}", {}, "new"),
    "report --out": ("report --out {out}", {}, "new"),
    "evaluate FGDEPTH_CACHE": (
        "evaluate --model {model} --data {ds}",
        {"FGDEPTH_CACHE": "{out}"},
        "new",
    ),
}
# where: (the place, what the line says); {name}: what the command writes there
PLACES = {
    "read-only": ("{read_only}/{name}", "no permission to write"),
    "the wrong kind": ("{notes}", "exists and is not a folder"),
    "under a file": ("{notes}/{name}", "is a file, not a folder"),
}
FILES = {  # where a file is written, the wrong kind is a folder of its name
    "synth --zip": "exists; it is not replaced",  # nor is a file
    "synth --preview": "is a folder, not a file",
    "train tracking store": "is a folder, not a file",
}


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """Usable inputs, and places to write that cannot be used: a read-only folder (read-only
    for root too once the command runs without CAP_DAC_OVERRIDE), a user's file."""
    import numpy as np
    from PIL import Image

    from fgdepth.engine.checkpoint import save_checkpoint
    from fgdepth.models import build_model
    from tests.conftest import write_dataset

    root = tmp_path_factory.mktemp("places")
    write_dataset(root / "ds", rows=6)
    save_checkpoint(root / "model.pt", build_model("unet", width=8), "unet", {"width": 8}, size=32)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(root / "image.png")
    (root / "notes.txt").write_text("a user's notes\n")
    (root / "read_only").mkdir()
    (root / "read_only").chmod(0o555)
    names = {"ds": "ds", "model": "model.pt", "image": "image.png", "notes": "notes.txt",
             "read_only": "read_only"}  # fmt: skip
    return {key: str(root / name) for key, name in names.items()}


def _case(writer: str, where: str, places: dict, tmp: Path):
    """(argv, environment, the path the line must name, what it must say)."""
    line, env, name = WRITERS[writer]
    place, says = PLACES[where]
    if where == "the wrong kind" and writer in FILES:
        place, says = "{tmp}/{name}", FILES[writer]
        (tmp / name).mkdir()
    out = place.format(tmp=tmp, name=name, **places)
    fill = dict(tmp=tmp, out=out, **places)
    argv = shlex.split(line.format(**fill))
    return argv, {k: v.format(**fill) for k, v in env.items()}, out, says


def _no_run_left_running(uri: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids) if ids else []
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []


def _checked(code: int, err: str, named: str, says: str, tmp: Path) -> None:
    assert code != 0, err
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 3, err
    assert named in err and says in err, err
    assert not (tmp / "cache").exists(), "data was decoded before the check"
    if (tmp / "mlflow.db").exists():
        _no_run_left_running(f"sqlite:///{tmp}/mlflow.db")


@pytest.mark.parametrize("where", ["the wrong kind", "under a file"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_place_a_command_cannot_write_is_one_line_before_any_work(
    writer, where, places, tmp_path, monkeypatch, capsys
):
    argv, env, named, says = _case(writer, where, places, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("FGDEPTH_CACHE", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    code = main(argv)
    _checked(code, capsys.readouterr().err, named, says, tmp_path)


@pytest.mark.slow  # a process per command, run without the right to write where root may
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_read_only_place_is_one_line_before_any_work(writer, places, tmp_path):
    import os
    import subprocess
    import sys

    argv, extra, named, says = _case(writer, "read-only", places, tmp_path)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store,
           "FGDEPTH_CACHE": str(tmp_path / "cache"), **extra}  # fmt: skip
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run([*DROP_DAC, sys.executable, "-m", "fgdepth", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    _checked(done.returncode, done.stderr, named, says, tmp_path)


# the file size limit (``ulimit -f``, in kB) and the file that reaches it: a shard of the
# packed dataset (6 rows, about 15 kB); a training state (the smoke model with its optimizer's
# moments, about 5 MB), where the store and the logged model (1.6 MB) stay under the limit
OVER_THE_LIMIT = {
    "data pack": (8, "data pack {ds} --out {tmp}/packed", "shard-000000.tar"),
    "train": (
        3000,
        "train --profile smoke --no-system-metrics --data {synth} --checkpoint-dir {tmp}/states "
        "--set checkpoint_minutes=0.0001",
        "state.pt",
    ),
}


@pytest.mark.slow  # a process of its own, under a file size limit
@pytest.mark.parametrize("command", list(OVER_THE_LIMIT))
def test_a_write_over_the_file_size_limit_is_one_line_naming_the_file(
    command, places, synth_dir, tmp_path
):
    import os
    import subprocess
    import sys

    limit, line, name = OVER_THE_LIMIT[command]
    args = shlex.join(shlex.split(line.format(tmp=tmp_path, synth=synth_dir, **places)))
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": store,
           "FGDEPTH_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": "ignore"}  # fmt: skip
    env.pop("MLFLOW_RUN_ID", None)
    script = f"ulimit -f {limit}; exec {shlex.quote(sys.executable)} -m fgdepth {args}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1 and "Traceback" not in done.stderr, err
    assert err[0].startswith("fgdepth: ") and err[0].endswith(
        f"{name}: file too large (over this process's file size limit, ulimit -f)"
    )
    if command == "train":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(store)
        (run,) = client.search_runs([client.get_experiment_by_name("fgdepth").experiment_id])
        assert run.info.status == "FAILED" and "file too large" in run.data.tags["fgdepth.failure"]
