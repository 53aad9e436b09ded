"""Headless Chromium for the browser tests: Debian's chromium and chromedriver at fixed paths, through Selenium.

Never Selenium Manager, never a downloaded browser; a test skips, with the reason, where either binary or
Selenium is missing. ``ELECTROGAN_CHROMIUM`` / ``ELECTROGAN_CHROMEDRIVER`` point elsewhere;
``ELECTROGAN_SCREENSHOTS=DIR`` keeps a screenshot of each screen a test names.
"""
import os
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("ELECTROGAN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ELECTROGAN_CHROMEDRIVER", "/usr/bin/chromedriver")


def need_browser():
    """Skip the calling test, saying what is missing, unless Chromium, chromedriver and Selenium are all there."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).is_file() and os.access(p, os.X_OK))]
    if missing:
        pytest.skip(f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")


def open_browser(folder: Path, window_size: str):
    """A headless Chromium with its profile in ``folder`` and downloads in ``driver.downloads`` (folder/downloads).

    ``window_size`` is "WIDTH,HEIGHT" in CSS pixels; the caller quits the driver.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    downloads = folder / "downloads"
    downloads.mkdir(parents=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", f"--window-size={window_size}",
                f"--user-data-dir={folder / 'profile'}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    driver.downloads = downloads
    return driver


def wait(condition, what, timeout=120.0):
    """Poll ``condition()`` every 50 ms until it returns something truthy (returned); fail after ``timeout`` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = condition()
        except Exception:  # the page may be rebuilding or reloading what we look at
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def shot(driver, name):
    """Save a screenshot as ``$ELECTROGAN_SCREENSHOTS/<name>.png`` when that variable is set."""
    folder = os.environ.get("ELECTROGAN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
