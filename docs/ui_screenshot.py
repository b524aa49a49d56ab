"""The README's screenshot of the MLflow UI comparing runs (the chart view of an experiment's
training runs), from a real tracking store.

python docs/ui_screenshot.py --store sqlite:///mlflow.db --experiment fgdepth \
    --out docs/images/mlflow_ui_compare.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import browser, mlflow_ui, page_text, wait_for  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="fgdepth")
    parser.add_argument("--out", default="docs/images/mlflow_ui_compare.png")
    parser.add_argument("--metric", default="test_depth_rmse", help="wait until its chart shows")
    args = parser.parse_args(argv)
    client = MlflowClient(args.store)
    exp = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    runs = [r for r in runs if "fgdepth.model" in r.data.tags]  # training runs only
    query = urllib.parse.urlencode(
        {"compareRunsMode": "CHART", "searchFilter": "tags.`fgdepth.model` LIKE '%'"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        with mlflow_ui(args.store, Path.cwd(), Path(tmp) / "ui.log") as base:
            with browser(1700, 1000) as driver:
                driver.get(f"{base}/#/experiments/{exp.experiment_id}/runs?{query}")
                wait_for(driver, lambda d: args.metric in page_text(d), what="the charts")
                for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label=Close]"):
                    button.click()  # the assistant's side panel
                time.sleep(3)  # let the charts draw
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
    print(f"wrote {args.out} ({len(runs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
