"""report.html in a real headless browser: renders offline, runs no model text as code.

Needs Debian's chromium and chromedriver (``apt-get install chromium
chromium-driver``; .ci/run installs them) and selenium (the ``test`` extra).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from xdetox.report import RunInfo, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MODELS = ("org/model-a", "model-b")
TARGETS = ("en", "de")
SEEDS = (1, 2)
SETTINGS = ("zs", "x-ft:en", "x-ft:de", "p-ft:10%", "p-ft:20%", "m-ft", "dpo:en")
NON_ZS_PARADIGMS = 4  # x-ft, p-ft, m-ft, dpo: one heatmap each per model
SCRIPT = "<script>alert(1)</script>"
IMG = 'see <img src=x onerror=alert(2)> here'

def completions() -> pd.DataFrame:
    rows = []
    for model in MODELS:
        for seed in SEEDS:
            for setting in SETTINGS:
                paradigm, _, variant = setting.partition(":")
                percent = int(variant.rstrip("%")) if variant.endswith("%") else None
                for target in TARGETS:
                    for i, pid in enumerate(("p1", "p2")):
                        rows.append({
                            "model": model, "setting": setting, "paradigm": paradigm,
                            "source": None if percent is not None else (variant or None),
                            "percent": percent, "seed": seed, "target": target,
                            "split": "test_toxic", "prompt_id": pid, "sample": 0,
                            "prompt": f"prompt {pid} in {target}",
                            "completion": f"{setting} says {pid}",
                            "toxicity": (0.8 if paradigm == "zs" else 0.3) - 0.2 * i + 0.05 * seed,
                        })
    df = pd.DataFrame(rows)
    evil = (df["seed"] == SEEDS[0]) & (df["prompt_id"] == "p1") & (df["target"] == "en")
    df.loc[evil & (df["setting"] == "x-ft:en"), "completion"] = SCRIPT
    df.loc[evil & (df["setting"] == "dpo:en"), "completion"] = IMG
    return df


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    info = RunInfo(model=", ".join(MODELS), scorer="toxclf-v1", seeds=SEEDS, epochs=1,
                   limit=2, decode={"temperature": 0.0}, lora={"r": 8}, config_name="browser")
    write_report(run_dir, completions(), info)
    return run_dir / "report.html"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).is_file()]
    if absent:
        pytest.skip(f"no {' or '.join(absent)}: apt-get install chromium chromium-driver")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_report_renders_offline_without_running_model_text(report, browser):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    browser.get(report.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"

    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []

    images = browser.find_elements(By.TAG_NAME, "img")
    assert images
    for img in images:
        assert browser.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) > 0
    heatmaps = browser.find_elements(By.CSS_SELECTOR, "img.heatmap")
    assert len(heatmaps) == len(MODELS) * NON_ZS_PARADIGMS

    text = browser.find_element(By.TAG_NAME, "body").text
    assert SCRIPT in text
    assert IMG in text
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert browser.find_elements(By.TAG_NAME, "script") == []
    sources = [img.get_attribute("src") for img in images]
    assert all(src.startswith("data:image/png;base64,") for src in sources)


def test_report_has_no_remote_references(report):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"url\(|@import", page, re.I)
    assert "http://" not in page and "https://" not in page
