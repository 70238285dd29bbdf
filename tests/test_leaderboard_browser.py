"""End to end: `arbench leaderboard` serves the app on localhost and headless Chromium (Debian's package,
driven by Playwright) renders a board, a plot and a run page; user strings stay inert text.
Screenshots are saved under test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from leaderboard_fixtures import EVIL_LABEL, EVIL_TASK_DESCRIPTION, add_run, artifact_folder, fid, score

from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs the playwright package (pip install playwright; "
                                  "it drives Debian's chromium, never `playwright install`)")
if not Path(CHROMIUM).exists():
    pytest.skip("the browser test needs Debian's chromium at /usr/bin/chromium: apt-get install chromium "
                "(scripts/setup.sh test installs it)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(results_dir, tmp_path):
    """A small store served by `arbench leaderboard` on a free localhost port; yields (url, run ids)."""
    store = Store()
    ids = {
        "a": add_run(store, method="llamagen-b", metrics=[fid(5.2, 0.2), score(190)],
                     provenance={"params": 111e6}),
        "b": add_run(store, method="var-d16", family="next-scale", metrics=[fid(3.4, 0.2), score(270)],
                     provenance={"params": 310e6}, artifacts=artifact_folder(tmp_path / "run-b")),
        "paper": add_run(store, method="llamagen-b", source="reported", label="LlamaGen-B (paper)",
                         protocol="paper", metrics=[fid(5.46)], provenance={"params": 111e6}),
        "evil": add_run(store, task="zz-evil-board", method="m-evil", label=EVIL_LABEL, metrics=[fid(1.0)],
                        task_description=EVIL_TASK_DESCRIPTION),
    }
    store.dispose()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "harness", "--db", f"sqlite:///{results_dir / 'arbench.db'}", "leaderboard",
         "--port", str(port), "--address", "127.0.0.1"],
        cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("`arbench leaderboard` did not start listening within 90 s")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", ids
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_board_and_run_page_render_in_chromium(served):
    base, ids = served
    SCREENSHOTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        page.goto(base + "/", timeout=90_000)
        # the grid draws on a canvas; its accessible table holds the cell texts (attached, never visible)
        page.wait_for_selector("[data-testid=stDataFrame] td:has-text('var-d16')", state="attached",
                               timeout=90_000)
        assert page.locator(".vega-embed").count() == 0  # the plots tab is built only when opened
        body = page.inner_text("body")
        assert "ARBench leaderboard" in body and "toy-board" in body
        assert "Protocol group P1" in body and "Protocol group P2" in body
        cells = page.locator("[data-testid=stDataFrame] td").all_inner_texts()
        assert "var-d16" in cells and "llamagen-b" in cells and "reported in a paper" in cells
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-board.png"), full_page=True)
        page.get_by_role("tab", name="plots: quality against cost").click()
        page.wait_for_selector(".vega-embed", state="attached", timeout=30_000)
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-plots.png"), full_page=True)

        page.goto(f"{base}/?run={ids['b']}", timeout=60_000)
        page.wait_for_selector("text=Artifacts", timeout=60_000)
        page.wait_for_selector("[data-testid=stImage] img", timeout=30_000)
        assert page.locator("audio").count() == 1
        assert "method:var-d16" in page.inner_text("body")
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-run.png"), full_page=True)

        for url in (f"{base}/", f"{base}/?run={ids['evil']}"):
            page.goto(url, timeout=60_000)
            if "run=" not in url:
                page.get_by_label("task").first.click()
                page.get_by_role("option", name="zz-evil-board").click()
            page.wait_for_selector("text=xss", timeout=60_000)
            time.sleep(1)  # give an injected handler the chance to run
            assert page.locator("img[src=x]").count() == 0 and page.locator("script:has-text('__xss')").count() == 0
            assert page.evaluate("window.__xss") is None and dialogs == []
        assert EVIL_LABEL in page.inner_text("h3")
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-injection.png"), full_page=True)
        browser.close()
