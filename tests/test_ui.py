"""The MLflow UI, opened in a real headless Chromium: a run's metrics are shown and its logged
pictures load, the Compare page shows two runs' predictions of the same test rows side by
side, and the chart view compares two runs' sample images; optuna-dashboard shows a trial's
picture (checked in the rendered pages, not from HTTP status codes)."""

import json
import time

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fgdepth.tracking import SAMPLES_KEY, TEST_PICTURE, TEST_TABLE
from tests.browser import (
    browser,
    click_text,
    loaded_images,
    mlflow_ui,
    page_text,
    screenshot,
    wait_for,
)


@pytest.fixture(scope="module")
def ui(trained_store, tmp_path_factory):
    """``mlflow ui`` over the trained store, started once for this module's tests."""
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with mlflow_ui(trained_store.uri, trained_store.folder, log) as base:
        yield base


@pytest.mark.slow
def test_the_mlflow_ui_shows_a_runs_metrics_and_pictures(trained_store, ui, tmp_path):
    client = MlflowClient(trained_store.uri)
    run = client.get_run(trained_store.runs["bce_ssim"])
    exp, run_id = run.info.experiment_id, run.info.run_id
    iou = run.data.metrics["test_mask_iou"]
    picture = TEST_PICTURE
    local = client.download_artifacts(run_id, picture, str(tmp_path))
    width, height = Image.open(local).size
    with browser() as driver:
        driver.get(f"{ui}/#/experiments/{exp}/runs/{run_id}")
        text = wait_for(
            driver, lambda d: "test_mask_iou" in page_text(d) and page_text(d), what="metrics"
        )
        words = text.split()  # the metrics table: a metric's name, then its value
        shown = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "test_mask_iou"]
        assert as_javascript_writes_it(iou) in shown, (shown, text[:2000])
        assert "bce_ssim" in text

        driver.get(f"{ui}/#/experiments/{exp}/runs/{run_id}/artifacts")
        click_text(driver, picture)
        # the picture itself, decoded by the browser at its own size
        wait_for(
            driver,
            lambda d: [i for i in loaded_images(d) if i[1:] == (width, height)],
            what=f"the logged picture ({width}x{height})",
        )


@pytest.mark.slow
def test_the_compare_page_shows_both_runs_predictions_of_the_same_test_rows(
    trained_store, ui, tmp_path
):
    client = MlflowClient(trained_store.uri)
    ids = list(trained_store.runs.values())
    exp = client.get_run(ids[0]).info.experiment_id
    # the rows each run tabled (the evaluation view's table): the same rows, in the same order
    tables = client.load_table(exp, TEST_TABLE, ids, extra_columns=["run_id"])
    rows = {run_id: list(tables.loc[tables["run_id"] == run_id, "row"]) for run_id in ids}
    assert rows[ids[0]] and rows[ids[0]] == rows[ids[1]], rows
    pictures = [
        Image.open(client.download_artifacts(run_id, TEST_PICTURE, str(tmp_path / run_id)))
        for run_id in ids
    ]
    size = pictures[0].size
    assert pictures[1].size == size  # the same rows, the same grid: pictures that pair
    with browser(1600, 1000) as driver:
        runs, experiments = json.dumps(ids), json.dumps([exp])
        driver.get(f"{ui}/#/compare-runs?runs={runs}&experiments={experiments}")
        wait_for(driver, lambda d: "Artifacts" in page_text(d), what="the Compare page")
        click_text(driver, TEST_PICTURE)

        def both(d):  # each run's picture, decoded by the browser at its own size
            found = {i[0] for i in loaded_images(d) if i[1:] == size}  # (a view may draw one twice)
            return found if len(found) == len(ids) else None

        wait_for(driver, both, what=f"both runs' {TEST_PICTURE} ({size[0]}x{size[1]})")
        image = driver.find_elements("xpath", "//img")[-1]
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        time.sleep(1)
        shot = screenshot(driver, "mlflow_compare_test_samples.png", tmp_path)
    grey = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert grey.std() > 10  # a page with pictures on it, not a blank one


def as_javascript_writes_it(value: float) -> str:
    """``value`` as the UI shows it: JavaScript's ``Number.prototype.toString``, the shortest
    text that reads back as the same double (Python's ``repr``, but for integers, which have
    no ``.0``, and the range where each chooses an exponent)."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if 1e-6 <= abs(value) < 1e21:
        return np.format_float_positional(value, unique=True, trim="-")
    mantissa, exponent = np.format_float_scientific(value, unique=True, trim="-").split("e")
    return f"{mantissa}e{int(exponent):+d}"


def test_values_are_written_as_javascript_writes_them():
    cases = {0.1: "0.1", 0.123456789012: "0.123456789012", 1.0: "1", 0.00005: "0.00005",
             1e-7: "1e-7", 2.5e-8: "2.5e-8", 12.5: "12.5", 1 / 3: "0.3333333333333333"}  # fmt: skip
    assert {value: as_javascript_writes_it(value) for value in cases} == cases


def series_sizes(client, run_id: str, folder) -> set[tuple[int, int]]:
    """The sizes of a run's image-series previews (what the chart view shows)."""
    sizes = set()
    for item in client.list_artifacts(run_id, "images"):
        if item.path.endswith(".webp") and f"/{SAMPLES_KEY}+" in item.path:
            sizes.add(Image.open(client.download_artifacts(run_id, item.path, str(folder))).size)
    return sizes


@pytest.mark.slow
def test_the_chart_view_compares_two_runs_sample_images(trained_store, ui, tmp_path):
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

    with browser(1600, 1000) as driver:
        view = "workflowType=machine_learning&compareRunsMode=CHART"
        driver.get(f"{ui}/#/experiments/{exp}/runs?{view}")
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
        show_large(driver, SAMPLES_KEY)
        screenshot(driver, "mlflow_chart_view_images.png", tmp_path)


def show_large(driver, title: str) -> None:
    """Drag the chart card ``title`` larger by its corner and bring its first image into view
    (for the screenshot)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    card = driver.find_element(
        By.XPATH, "//*[@data-testid='experiment-view-compare-runs-card']"
        f"[.//*[normalize-space(text())='{title}']]",
    )  # fmt: skip
    width, height = card.size["width"], card.size["height"]
    corner = ActionChains(driver).move_to_element_with_offset(card, width // 2 - 4, height // 2 - 4)
    corner.click_and_hold().move_by_offset(560, 190).release().perform()
    time.sleep(1)
    image = card.find_element(By.XPATH, f".//img[contains(@src, '{title}')]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", image)
    time.sleep(1)


@pytest.fixture
def tuned(synth_dir, tmp_path, monkeypatch):
    """A study of two smoke trials on SQLite, its trials' files beside it."""
    from fgdepth.app.tune import tune
    from fgdepth.config import load_config

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store is created here, from one process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    sets = ["tune.trials=2", "tune.pruner.name=none", f"data.path={synth_dir}"]
    storage = f"sqlite:///{tmp_path}/optuna.db"
    return tune(load_config("bce_ssim", "smoke", sets), "bce_ssim", study_name="dash",
                storage=storage), storage  # fmt: skip


@pytest.mark.slow
def test_optuna_dashboard_shows_a_trials_picture(tuned, tmp_path):
    import shutil

    import optuna
    from optuna.artifacts import get_all_artifact_meta

    from fgdepth.tuning import artifact_dir
    from tests.services import http_server, missing

    if shutil.which("optuna-dashboard") is None:
        missing("optuna-dashboard is not installed (pip install 'fgdepth[dashboard]')")
    outcome, storage = tuned
    folder = artifact_dir(storage)
    assert folder == tmp_path / "optuna-artifacts"
    trial = outcome.study.trials[outcome.best_trial]
    files = {m.filename: m for m in get_all_artifact_meta(trial, storage=outcome.study._storage)}
    # one picture: the trial's last stage's (its schedule decides how many stages it had)
    pictures = [name for name in files if name.startswith("samples_stage")]
    assert len(pictures) == 1 and set(files) == {"metrics.json", *pictures}, files
    picture = pictures[0]
    png = files[picture]
    size = Image.open(folder / png.artifact_id).size
    study_id = optuna.load_study(study_name="dash", storage=storage)._study_id
    args = ["optuna-dashboard", storage, "--artifact-dir", str(folder), "--host", "127.0.0.1",
            "--port", "{port}"]  # fmt: skip
    with http_server(args, "/api/studies", tmp_path / "dashboard.log") as base:
        with browser(1400, 1000) as driver:
            driver.get(f"{base}/dashboard/studies/{study_id}/trials?numbers={trial.number}")
            wait_for(driver, lambda d: "Artifacts" in page_text(d), what="the trial's page")
            assert picture in page_text(driver) and "metrics.json" in page_text(driver)
            # the picture itself, decoded by the browser at its own size
            wait_for(
                driver,
                lambda d: [i for i in loaded_images(d)
                           if i[0].endswith(f"/{png.artifact_id}") and i[1:] == size],
                what=f"the trial's picture ({size[0]}x{size[1]})",
            )  # fmt: skip
            heading = driver.find_element("xpath", "//*[normalize-space(text())='Artifacts']")
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", heading)
            time.sleep(1)
            screenshot(driver, "optuna_dashboard_trial_picture.png", tmp_path)
