"""/docs (Swagger UI) and /redoc (ReDoc) in a real headless Chromium, offline (SPEC §3.1 rule 8).

The browser is Debian's ``chromium`` driven through Debian's ``chromium-driver`` with
Selenium (``tests/run.sh`` installs both with apt; nothing downloads a browser build:
the driver path is given, so Selenium Manager never runs). Each test loads a page from
a running proxy, waits until every documented operation's summary is in the rendered
text, and checks from Chromium's own network log that every request went to the proxy.
A screenshot of each page goes to ``$MAIL_PROXY_SCREENSHOTS`` (default: the test's
tmp_path) and its path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.fixtures.proxy import fast_settings, running_proxy
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.sqlite_only]

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--window-size=1280,1600",
)
# Operations that exist since the first API slice; the rest are checked generically.
STABLE_SUMMARIES = ("Validate and enqueue messages", "Create or update a tenant", "List messages")
RENDER_TIMEOUT_S = 30


def _binary(env_name: str, *names: str) -> str:
    found = os.environ.get(env_name) or next(filter(None, map(shutil.which, names)), None)
    if found:
        return found
    message = f"{names[0]} not found: install the Debian packages chromium and chromium-driver"
    if os.environ.get("CI"):
        pytest.fail(message + " (tests/run.sh does)")
    pytest.skip(message)
    raise AssertionError  # unreachable: skip raises


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _binary("MAIL_PROXY_CHROMIUM", "chromium", "chromium-browser")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(
        executable_path=_binary("MAIL_PROXY_CHROMEDRIVER", "chromedriver"),
        log_output=str(tmp_path / "chromedriver.log"),
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _requested_urls(driver: object) -> list[str]:
    """Every URL requested since the last call, from Chromium's DevTools network log.

    A fresh profile's first tab shows Chromium's own New Tab page, whose chrome://
    resources trickle into the log after we navigate away; requests made for a
    chrome:// document are the browser's, not the page under test's, so they are left
    out. Everything else, workers and blob: documents included, is judged.
    """
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[attr-defined]
        message = json.loads(entry["message"])["message"]
        if message["method"] != "Network.requestWillBeSent":
            continue
        params = message["params"]
        if not params.get("documentURL", "").startswith("chrome://"):
            urls.append(params["request"]["url"])
    return urls


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MAIL_PROXY_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.mark.parametrize(
    ("page", "operation_selector"),
    [("docs", ".opblock"), ("redoc", "[data-section-id^='operation/']")],
)
def test_docs_page_renders_every_operation_offline(
    page: str,
    operation_selector: str,
    browser: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with running_proxy(fast_settings(tmp_path)) as (server, _api):
        base = server.url
        document = requests.get(f"{base}/openapi.json", timeout=10).json()
        summaries = [
            entry["summary"] for item in document["paths"].values() for entry in item.values()
        ]
        assert set(STABLE_SUMMARIES) <= set(summaries)

        browser.get("about:blank")  # type: ignore[attr-defined]
        _requested_urls(browser)  # drain: only this page's requests are judged
        browser.get(f"{base}/{page}")  # type: ignore[attr-defined]

        def rendered() -> list[str]:
            count = browser.execute_script(  # type: ignore[attr-defined]
                "return document.querySelectorAll(arguments[0]).length", operation_selector
            )
            text = browser.execute_script("return document.body.innerText")  # type: ignore[attr-defined]
            missing = [s for s in summaries if s not in text]
            return [] if count >= len(summaries) and not missing else [f"{count} ops", *missing]

        wait_until(lambda: not rendered(), timeout_s=RENDER_TIMEOUT_S, what=f"/{page} to render")
        shot = _screenshot_dir(tmp_path) / f"{page}.png"
        assert browser.save_screenshot(str(shot))  # type: ignore[attr-defined]
        with capsys.disabled():
            print(f"\nscreenshot of /{page}: {shot}")  # noqa: T201

        urls = _requested_urls(browser)
        assert f"{base}/openapi.json" in urls
        assert any(url.startswith(f"{base}/docs/assets/") for url in urls)
        outside = [u for u in urls if not u.startswith((f"{base}/", "data:", "blob:"))]
        assert outside == []
        console = browser.get_log("browser")  # type: ignore[attr-defined]
        assert [e for e in console if e["level"] == "SEVERE"] == []
