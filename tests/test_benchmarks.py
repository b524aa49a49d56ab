"""Benchmarks are scripts; here they only have to run, in their smoke mode."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each benchmark script runs in a subprocess

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


SCRIPTS = [
    "loader.py",
    "stream.py",
    "train_speed.py",
    "tuning.py",
    "time_to_quality.py",
    "quality.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_in_smoke_mode(script, tmp_path):
    before = (BENCHMARKS.parent / "BENCHMARKS.md").read_text()
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| " in out.stdout  # a results table
    assert (BENCHMARKS.parent / "BENCHMARKS.md").read_text() == before  # smoke writes nothing


def test_the_protocol_judges_a_variant_against_the_default_in_smoke_mode(tmp_path):
    before = (BENCHMARKS.parent / "BENCHMARKS.md").read_text()
    args = ["--smoke", "--protocol", "--families", "street", "--seeds", "0",
            "--set", "loss.depth.fg_l1=1", "--label", "fg_l1", "--out", str(tmp_path)]  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(BENCHMARKS / "quality.py"), *args],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    # a verdict per headline metric (exit 1 when one is worse: either is a finished protocol)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    for metric in ("mask_iou", "depth_rmse", "fg_distance_error"):
        assert f"| {metric} |" in out.stdout
    assert "silhouette_geometry" in out.stdout and "Verdict:" in out.stdout
    assert (BENCHMARKS.parent / "BENCHMARKS.md").read_text() == before  # smoke writes nothing
