"""The leaderboard page in headless Chromium (selenium, a dev dependency): what its browser test, its scale
benchmark and the docs' screenshot drive.

``make setup`` installs Chromium and its driver (Debian packages ``chromium`` and ``chromium-driver``) as it
installs the emoji font; ``missing()`` says which of them (or selenium) is absent, so a caller can skip with that
reason.
"""
from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def missing() -> str:
    """Why the page cannot be driven here ("" when it can): Chromium, its driver or selenium not installed."""
    if not any(shutil.which(b) for b in BROWSERS):
        return "Chromium is not installed (make setup installs the Debian package chromium)"
    if not shutil.which(DRIVER):
        return "chromedriver is not installed (make setup installs the Debian package chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -c constraints.txt -e '.[dev]')"
    return ""


@contextmanager
def page(index: str | Path, *, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium (selenium ``WebDriver``) with ``index`` loaded from disk and its console log kept
    (``console_errors``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = next(shutil.which(b) for b in BROWSERS if shutil.which(b))
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which(DRIVER)))
    try:
        driver.get(Path(index).resolve().as_uri())
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The console's error lines since the last call (SEVERE entries of the browser log)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


__all__ = ["missing", "page", "console_errors"]
