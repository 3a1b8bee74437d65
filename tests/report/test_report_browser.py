"""The run report in a real browser: headless Chromium (Debian's chromium + chromium-driver through
Selenium; ``.ci/install-browser.sh`` installs them) opens the report of a real tiny run and the test fails
if an image does not decode, a number differs from the run's JSON at its displayed precision, the page asks
for anything over the network, or the console logs an error. No skip: a missing browser is a failure that
says how to install it. The screenshot lands in ``/tmp/elbolab_report_screenshot.png``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from elbolab.report import build_report
from report_checks import check_all

SCREENSHOT = Path(tempfile.gettempdir()) / "elbolab_report_screenshot.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000"]


def _find(*names: str) -> str:
    for n in names:
        p = shutil.which(n) or (n if Path(n).is_file() else None)
        if p:
            return p
    raise AssertionError(f"none of {names} found: run .ci/install-browser.sh "
                         "(apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.binary_location = _find("chromium", "chromium-browser", "google-chrome")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_find("chromedriver", "/usr/lib/chromium/chromedriver"))
    d = webdriver.Chrome(service=service, options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


_TAGS_JS = """return Array.from(document.querySelectorAll('[data-key]')).map(
    e => [e.dataset.run, e.dataset.key, e.dataset.value, e.innerText]);"""
_IMGS_JS = """return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);"""
_REQUESTS_JS = """return performance.getEntriesByType('resource').map(r => r.name)
    .concat(Array.from(document.querySelectorAll('[src],[href]')).map(e => e.getAttribute('src') || e.getAttribute('href'))
    .filter(u => !(u.startsWith('data:') || u.startsWith('#'))));"""


def test_report_renders_in_chromium(driver, tiny_run: Path, tmp_path: Path) -> None:
    res = build_report([tiny_run], tmp_path / "report.html", per_timestep_images=2)
    driver.get(res.path.resolve().as_uri())
    assert driver.title == "elbolab run report"
    imgs = driver.execute_script(_IMGS_JS)
    assert len(imgs) == res.images >= 5  # curves, 2 grids, ELBO bars, L_t, FID vs NFE
    bad = [(alt, w, h) for alt, complete, w, h in imgs if not complete or w == 0 or h == 0]
    assert not bad, f"images that do not decode: {bad}"
    assert driver.execute_script(_REQUESTS_JS) == []  # nothing fetched, nothing to fetch
    tags = driver.execute_script(_TAGS_JS)
    seen = check_all([tiny_run], tags)
    assert len(tags) == res.numbers and (0, "metrics.json:bpd.value") in seen
    assert (0, "metrics.json:bpd.terms.denoising") in seen and (0, "sampler_quality.json:1.fid") in seen
    # the collapsible config opens and shows the run's config.toml
    details = driver.find_element("css selector", "details")
    assert not details.get_attribute("open")
    details.find_element("css selector", "summary").click()
    assert "family" in details.find_element("css selector", "pre").text
    errors = [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "ERROR")]
    assert not errors, errors
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, min(int(height) + 40, 8000))
    assert driver.save_screenshot(str(SCREENSHOT)) and SCREENSHOT.stat().st_size > 10_000
