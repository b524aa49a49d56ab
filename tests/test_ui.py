"""The MLflow UI, opened in a real headless Chromium: a run's metrics are shown and its logged
pictures load (checked in the rendered page, not from HTTP status codes)."""

from mlflow.tracking import MlflowClient
from PIL import Image

from tests.browser import browser, click_text, loaded_images, mlflow_ui, page_text, wait_for


def test_the_mlflow_ui_shows_a_runs_metrics_and_pictures(trained_store, tmp_path):
    client = MlflowClient(trained_store.uri)
    run = client.get_run(trained_store.runs["bce_ssim"])
    exp, run_id = run.info.experiment_id, run.info.run_id
    iou = run.data.metrics["mask_iou"]
    picture = next(a.path for a in client.list_artifacts(run_id, "samples"))
    local = client.download_artifacts(run_id, picture, str(tmp_path))
    width, height = Image.open(local).size
    with mlflow_ui(trained_store.uri, trained_store.folder, tmp_path / "ui.log") as base:
        with browser() as driver:
            driver.get(f"{base}/#/experiments/{exp}/runs/{run_id}")
            text = wait_for(
                driver, lambda d: "mask_iou" in page_text(d) and page_text(d), what="metrics"
            )
            assert f"{iou:.4f}"[:5] in text, text[:2000]  # the UI rounds: the leading digits
            assert "bce_ssim" in text

            driver.get(f"{base}/#/experiments/{exp}/runs/{run_id}/artifacts")
            click_text(driver, "samples")
            click_text(driver, picture.split("/")[-1])
            # the picture itself, decoded by the browser at its own size
            wait_for(
                driver,
                lambda d: [i for i in loaded_images(d) if i[1:] == (width, height)],
                what=f"the logged picture ({width}x{height})",
            )
