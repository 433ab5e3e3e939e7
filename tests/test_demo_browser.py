"""``genlab demo`` end to end in a real headless browser: the CLI serves a run, Chromium (driven by
Playwright) sets the seed, presses Sample and gets back the very grid ``RunDemo.sample`` draws with
that seed, then encodes a test image; no request leaves 127.0.0.1. A screenshot is saved in the
test's temporary folder (and at ``$GENLAB_DEMO_SCREENSHOT`` when set: the README's picture).

Needs the extras ``demo`` and ``browser`` and a Chromium (Debian: ``apt-get install chromium``;
elsewhere set ``GENLAB_CHROMIUM`` to its path). Without them the test is skipped and says why;
with ``GENLAB_REQUIRE_BROWSER=1`` (as CI sets once it has installed one) it fails instead.
``GENLAB_DEMO_RUN`` serves that run folder instead of a tiny one trained here."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest

from genlab.cli import main

CHROMIUM = os.environ.get("GENLAB_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
#: Chromium's own flags for a closed network: no background requests, no sandbox as root.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def _need(ok: object, reason: str) -> None:
    if not ok:
        if os.environ.get("GENLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (GENLAB_REQUIRE_BROWSER=1: CI installed a browser, so the test must run)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"genlab demo exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"genlab demo did not answer on {url} within {timeout:.0f} s")


@pytest.mark.slow
def test_the_demo_page_in_a_real_browser(tmp_path):
    _need(importlib.util.find_spec("gradio"), "Gradio is not installed: pip install -e '.[demo]'")
    _need(importlib.util.find_spec("playwright"), "Playwright is not installed: pip install -e '.[browser]'")
    _need(CHROMIUM, "no Chromium found: apt-get install chromium (Debian), or set GENLAB_CHROMIUM to a Chromium")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from genlab.demo import RunDemo

    run = os.environ.get("GENLAB_DEMO_RUN")
    if run is None:
        run = str(tmp_path / "vae-digits")
        quick = ["--set", "steps=60", "--set", "eval_every=30", "--set", "sample_every=0", "--quiet"]
        assert main(["train", "vae", "--data", "digits", "--out", run, *quick]) == 0
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "genlab", "demo", run, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    outside: list[str] = []
    try:
        _wait_for(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else outside.append(r.url))
            page.goto(url, wait_until="load")
            page.locator("#seed-0 input").fill("7")
            page.locator("#mean-0 input").check()  # decoder means: the digits, not the pixel noise
            page.locator("#sample-0").click()
            img = page.locator("#sample-image-0 img")
            img.wait_for(state="visible", timeout=60_000)
            got = np.asarray(Image.open(BytesIO(page.request.get(img.get_attribute("src")).body())).convert("RGB"))
            size = page.evaluate("() => { const i = document.querySelector('#sample-image-0 img');"
                                 " return [i.naturalHeight, i.naturalWidth]; }")  # fmt: skip
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("GENLAB_DEMO_SCREENSHOT"):
                shutil.copyfile(shot, os.environ["GENLAB_DEMO_SCREENSHOT"])
            page.get_by_role("tab", name="Encode").click()
            page.locator("#encode-0").click()
            page.locator("#decoded-0 img").wait_for(state="visible", timeout=60_000)
            recon = page.locator("#recon-0 img")
            recon.wait_for(state="visible", timeout=60_000)
            recon_px = np.asarray(
                Image.open(BytesIO(page.request.get(recon.get_attribute("src")).body())).convert("RGB")
            )
            page.screenshot(path=str(tmp_path / "demo-encode.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    demo = RunDemo(run)
    want = demo.sample(n=64, seed=7, mean=True).image  # the page's default number, the seed and box set
    assert got.shape[0] > 100 and got.shape[1] > 100 and size == list(want.shape[:2])
    assert np.array_equal(got, want)
    assert np.array_equal(recon_px, demo.encode(*demo.image(0))[1])
    assert Path(shot).stat().st_size > 10_000
    assert outside == [], f"the page asked other hosts: {outside[:5]}"
