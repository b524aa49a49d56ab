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
