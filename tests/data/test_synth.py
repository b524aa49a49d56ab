import hashlib

import numpy as np
import pytest

from fgdepth.config import SynthConfig
from fgdepth.data import open_dataset
from fgdepth.data.synth import depth_to_unit, generate


def _digest(path):
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def test_same_arguments_same_bytes_whatever_the_workers(tmp_path):
    spec = SynthConfig(n=24, size=48, seed=7, backgrounds=4)
    a = generate(spec, tmp_path / "a", workers=1, quiet=True)
    b = generate(spec, tmp_path / "b", workers=2, quiet=True)
    assert _digest(a) == _digest(b)
    za = generate(spec, tmp_path / "a.zip", as_zip=True, workers=1, quiet=True)
    zb = generate(spec, tmp_path / "b.zip", as_zip=True, workers=2, quiet=True)
    assert _digest(za) == _digest(zb)


def test_another_seed_gives_other_images(tmp_path):
    a = generate(SynthConfig(n=4, size=32, seed=1, backgrounds=1), tmp_path / "a", quiet=True)
    b = generate(SynthConfig(n=4, size=32, seed=2, backgrounds=1), tmp_path / "b", quiet=True)
    assert _digest(a)["fg_bg/0000/0000000.jpg"] != _digest(b)["fg_bg/0000/0000000.jpg"]


def test_many_composites_share_a_background(synth_dir):
    ds = open_dataset(synth_dir)
    assert ds.rows["bg"].nunique() == 5
    assert ds.rows["bg"].value_counts().min() >= 8


def test_composites_are_realistic_pairs(synth_dir):
    """fg_bg differs from bg inside the mask a lot, outside it a little but not nothing
    (shadow, illumination, noise, JPEG), and the foreground is nearer than what it hides."""
    ds = open_dataset(synth_dir)
    inside, outside = [], []
    for i in range(len(ds)):
        s = ds.sample(i)
        diff = np.abs(s.fg_bg.astype(float) - s.bg.astype(float)).mean(axis=2)
        assert s.mask.any()
        inside.append(diff[s.mask].mean())
        outside.append(diff[~s.mask].mean())
        assert 0 < s.depth.min() and s.depth.max() <= 1
    assert np.median(inside) > 3 * np.median(outside)
    assert 0.5 < np.median(outside) < 15  # not identical outside the mask


def test_textures_are_not_flat(synth_dir):
    s = open_dataset(synth_dir).sample(0)
    assert len(np.unique(s.bg.reshape(-1, 3), axis=0)) > 500


def test_depth_encoding_is_monotonic_brighter_nearer():
    z = np.array([1.0, 2.0, 5.0, 20.0, 40.0])
    d = depth_to_unit(z)
    assert d[0] == 1.0 and d[-1] == 0.0 and np.all(np.diff(d) < 0)


@pytest.mark.slow  # a generating process, killed
def test_a_killed_generation_continues_and_writes_the_same_bytes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from fgdepth.data.synth import PROGRESS

    spec = SynthConfig(n=120, size=48, seed=5, backgrounds=12)
    whole = generate(spec, tmp_path / "whole", quiet=True)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "fgdepth", "synth", "--out", str(out), "--n", "120",
               "--size", "48", "--seed", "5", "--backgrounds", "12", "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while len(list((out / PROGRESS).glob("b*.json"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / PROGRESS).glob("b*.json")))
    assert 3 <= finished < 12 and not (out / "manifest.csv").exists()
    again = subprocess.run(command, capture_output=True, text=True, check=True)
    assert f"resuming, {finished} of 12 backgrounds already done" in again.stdout
    assert _digest(out) == _digest(whole)  # byte-identical, and no progress records left


def test_the_declared_encoding_gives_the_foregrounds_distance_in_metres(synth_dir):
    """Read with its dataset.yaml, the median depth inside each mask is the manifest's
    fg_distance_m (the camera depth of the feet) within the figure's own depth: its body
    bulges towards the camera, and a camera looking down sees its top nearer."""
    ds = open_dataset(synth_dir)
    for i in range(len(ds)):
        s = ds.sample(i)
        metres = ds.depth_encoding.to_metres(float(np.median(s.depth[s.mask])))
        assert 0.85 < metres / float(ds.rows["fg_distance_m"][i]) < 1.02


def test_a_built_in_dataset_made_before_it_declared_its_encoding_gets_its_dataset_yaml():
    from fgdepth.data.builtin import builtin_dataset

    spec = SynthConfig(n=4, size=32, seed=1, backgrounds=1)
    folder = builtin_dataset(spec)  # under the test's $FGDEPTH_CACHE
    (folder / "dataset.yaml").unlink()  # as an earlier fgdepth left it
    assert open_dataset(folder).depth_encoding is None
    assert str(open_dataset(builtin_dataset(spec)).depth_encoding) == "log 1-40 m"
