"""A command never writes where it would lose a user's files: into a dataset, a non-empty
folder, the data it reads, or (through ``--resume``) a file outside its checkpoint folder.
Each case: exit 2, one line, nothing outside the command's own outputs changed."""

from __future__ import annotations

import hashlib
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
