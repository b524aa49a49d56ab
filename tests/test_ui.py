"""The MLflow UI, opened in a real headless Chromium: a run's metrics are shown and its logged
pictures load, and the chart view compares two runs' sample images (checked in the rendered
page, not from HTTP status codes)."""

import time

from mlflow.tracking import MlflowClient
from PIL import Image

from fgdepth.tracking import SAMPLES_KEY
from tests.browser import (
    browser,
    click_text,
    loaded_images,
    mlflow_ui,
    page_text,
    screenshot,
    wait_for,
)


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


def series_sizes(client, run_id: str, folder) -> set[tuple[int, int]]:
    """The sizes of a run's image-series previews (what the chart view shows)."""
    sizes = set()
    for item in client.list_artifacts(run_id, "images"):
        if item.path.endswith(".webp") and f"/{SAMPLES_KEY}+" in item.path:
            sizes.add(Image.open(client.download_artifacts(run_id, item.path, str(folder))).size)
    return sizes


def test_the_chart_view_compares_two_runs_sample_images(trained_store, tmp_path):
    from selenium.webdriver.common.by import By

    client = MlflowClient(trained_store.uri)
    runs = {name: client.get_run(run_id) for name, run_id in trained_store.runs.items()}
    exp = runs["bce_ssim"].info.experiment_id
    sizes = {r.info.run_id: series_sizes(client, r.info.run_id, tmp_path) for r in runs.values()}
    assert all(sizes.values()), sizes

    def shown(d):
        """Per run, the sizes of its sample images the page has decoded."""
        found = {}
        for src, width, height in loaded_images(d):
            for run_id in sizes:
                if f"run_uuid={run_id}" in src and f"{SAMPLES_KEY}%2B" in src:
                    found.setdefault(run_id, set()).add((width, height))
        return found if found.keys() == sizes.keys() else None

    with mlflow_ui(trained_store.uri, trained_store.folder, tmp_path / "ui.log") as base:
        with browser(1600, 1000) as driver:
            # no workflowType in the URL: the experiment's kind opens the model-training view
            driver.get(f"{base}/#/experiments/{exp}/runs?compareRunsMode=CHART")
            for name in runs:  # select both runs in the list beside the charts
                row = f"//a[normalize-space(.)='{name}']/ancestor::*[@role='row'][1]"
                wait_for(driver, lambda d, r=row: d.find_elements(By.XPATH, r), what=name)
                driver.find_element(By.XPATH, f"{row}//input[@type='checkbox']").click()
            search = driver.find_element(By.XPATH, "//input[@placeholder='Search metric charts']")
            search.send_keys(SAMPLES_KEY)
            found = wait_for(driver, shown, what="both runs' sample images")
            for run_id, seen in found.items():  # each decoded at its own logged size
                assert seen <= sizes[run_id], (seen, sizes[run_id])
            for close in driver.find_elements(By.XPATH, "//button[@aria-label='Close']"):
                close.click()  # the assistant's side panel: more room for the charts
            time.sleep(1)  # let the layout settle for the picture
            screenshot(driver, "mlflow_chart_view_images.png", tmp_path)
