import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

pytestmark = pytest.mark.slow  # a study trains in a subprocess


def test_study_trains_each_experiment_and_seed_and_writes_the_comparison(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "study", "--profile", "smoke", "--experiments",
         "bce,dice_ssim", "--seeds", "0,1", "--out", str(tmp_path / "out"),
         "--no-system-metrics"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert re.match(
        r"study: 4 runs \(bce, dice_ssim\); expected to take about \d+ minutes", lines[0]
    )
    assert re.search(r"^study: 4/4 runs in [\d.]+ min; about 0.0 min left", out.stdout, re.M)
    assert re.search(r"^The study took [\d.]+ minutes \(4 runs\)", out.stdout, re.M)
    text = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert text[0] == (
        "Profile `smoke`, seeds 0,1; every run trained its recipe as written at the profile."
    )
    table = text[2:6]
    assert table[0].startswith("| entry point | mask_iou")
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table[2:]]
    assert [c[0] for c in cells] == ["bce", "dice_ssim"]
    assert all(re.fullmatch(r"\**\d\.\d{4} ± \d\.\d{4}\**", c[1]) for c in cells)  # mask_iou
    assert [c[7] for c in cells] == ["0,1", "0,1"]
    assert "mlflow ui --backend-store-uri" in out.stdout
    picture = Image.open(tmp_path / "out" / "comparison.png")
    assert picture.size[0] > 7 * 32  # fg_bg, mask, depth + 2 columns per experiment
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fgdepth").experiment_id])
    seeds = sorted((r.data.tags["fgdepth.entry_point"], r.data.params["seed"]) for r in runs)
    assert seeds == [("bce", "0"), ("bce", "1"), ("dice_ssim", "0"), ("dice_ssim", "1")]
    assert all(r.info.status == "FINISHED" for r in runs)
    # the table's mean is the mean of the runs' logged metric
    logged = [
        r.data.metrics["test_mask_iou"] for r in runs if r.data.tags["fgdepth.entry_point"] == "bce"
    ]
    assert cells[0][1].strip("*").startswith(f"{sum(logged) / 2:.4f}")
