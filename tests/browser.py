"""A real headless browser for the tests: Debian's chromium driven by selenium through chromedriver.

`make browser` installs them (`apt-get install chromium chromium-driver`, as root); the
:func:`browser` fixture tries the same when they are missing and apt-get can run, and otherwise
skips with a reason that says plainly that the page was not tested in a browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
APT_PACKAGES = ("chromium", "chromium-driver")


def _find() -> tuple[str, str] | None:
    binary = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


def _install() -> str:
    """Try apt-get; returns what went wrong, or '' when it ran."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "apt-get needs root (run `sudo make browser`)"
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES],
            check=True,
            capture_output=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    except (subprocess.SubprocessError, OSError) as err:
        return f"apt-get install {' '.join(APT_PACKAGES)} failed: {err}"
    return ""


def _skip(reason: str) -> None:
    message = f"NO BROWSER, the interactive data map was NOT tested in a browser: {reason}"
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    """A headless chromium WebDriver that keeps the page's console messages."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
    from selenium.webdriver.chrome.service import Service

    found = _find()
    if found is None:
        problem = _install()
        found = _find()
        if found is None:
            _skip(problem or f"apt-get installed {APT_PACKAGES} but no chromium and chromedriver are on PATH")
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1000,760")
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
    except Exception as err:  # a browser that cannot start is the same as none
        _skip(f"chromium at {binary} did not start: {err}")
    yield driver
    driver.quit()


def open_page(driver, path) -> None:
    """Load the local file ``path``, after dropping the console messages earlier pages left."""
    driver.get_log("browser")
    driver.get(path.resolve().as_uri())


def console_problems(driver) -> list[dict]:
    """The page's console errors and warnings since the last look."""
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
