import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

pytestmark = pytest.mark.slow  # a study trains in a subprocess


def test_study_trains_each_experiment_and_writes_the_comparison(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()
    out = subprocess.run(
        [sys.executable, "-m", "fgdepth", "study", "--profile", "smoke", "--experiments",
         "bce,dice_ssim", "--out", str(tmp_path / "out"), "--no-system-metrics"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    table = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert table[0].startswith("| entry point | mask_iou")
    assert [line.split("|")[1].strip() for line in table[2:]] == ["bce", "dice_ssim"]
    assert "mlflow ui --backend-store-uri" in out.stdout
    picture = Image.open(tmp_path / "out" / "comparison.png")
    assert picture.size[0] > 7 * 32  # fg_bg, mask, depth + 2 columns per run
    runs = MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("fgdepth").experiment_id]
    )
    assert sorted(r.data.tags["fgdepth.entry_point"] for r in runs) == ["bce", "dice_ssim"]
    assert all(r.info.status == "FINISHED" for r in runs)
