"""A real headless Chromium (the distribution's chromium and chromedriver) and an MLflow UI
server on loopback, for tests and for the README's screenshots."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.services import http_server, missing

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium() -> str | None:
    return next((p for p in CHROMIUM if Path(p).exists()), None) or shutil.which("chromium")


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 900):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed (pip install -e '.[test]')")
    binary = chromium()
    if binary is None or not Path(CHROMEDRIVER).exists():
        missing("chromium and chromium-driver are not installed (apt-get install ...)")
    profile = tempfile.mkdtemp(prefix="fgdepth-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def mlflow_ui(store_uri: str, cwd: Path, log: Path):
    """``mlflow ui`` on 127.0.0.1 and a free port; yields its base URL."""
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store_uri,
            "--host", "127.0.0.1", "--port", "{port}"]  # fmt: skip
    with http_server(args, "/health", log, cwd=cwd) as base:
        yield base


def wait_for(driver, predicate, timeout: float = 60, what: str = "the page"):
    """Poll ``predicate(driver)`` until it returns something truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; page text: {page_text(driver)[:1500]}")


def page_text(driver) -> str:
    return driver.execute_script("return document.body ? document.body.innerText : ''") or ""


def loaded_images(driver) -> list[tuple[str, int, int]]:
    """(src, width, height) of every <img> on the page that finished loading with pixels."""
    return [
        tuple(item)
        for item in driver.execute_script(
            "return Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0)"
            ".map(i => [i.src, i.naturalWidth, i.naturalHeight])"
        )
    ]


def click_text(driver, text: str, timeout: float = 30) -> None:
    """Click the shown element whose own text is ``text`` (waiting for it to appear): a page
    may also hold the text in elements it hides, which cannot be clicked."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    def find(d):
        try:
            same = f"normalize-space(.)='{text}'"  # the deepest element that reads ``text``
            found = d.find_elements(By.XPATH, f"//*[{same} and not(*[{same}])]")
            return next((e for e in found if e.is_displayed()), found[0] if found else None)
        except WebDriverException:
            return None

    element = wait_for(driver, find, timeout, what=f"'{text}'")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    driver.execute_script("arguments[0].click()", element)  # also where a tree draws over it


def screenshot(driver, name: str, folder: Path) -> Path:
    """Save the page as ``folder/name``, and also under ``$FGDEPTH_SCREENSHOTS`` when set (the
    README's pictures: ``FGDEPTH_SCREENSHOTS=docs/images``)."""
    path = folder / name
    driver.save_screenshot(str(path))
    extra = os.environ.get("FGDEPTH_SCREENSHOTS")
    if extra:
        target = Path(__file__).resolve().parent.parent / extra  # relative: to the repository
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path
