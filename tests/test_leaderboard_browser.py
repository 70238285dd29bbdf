"""End to end: `arbench leaderboard` serves the app on localhost and headless Chromium (Debian's package,
driven by Playwright) renders the overview, a linked board with its settings column and no "None" cell, the
lossy/lossless split of a decoding board, a plot, the diff of two runs and a run page; user strings stay
inert text. Screenshots are saved under test-artifacts/."""

from __future__ import annotations

import re

import time
from pathlib import Path

import pytest
from leaderboard_fixtures import EVIL_LABEL, EVIL_TASK_DESCRIPTION, add_run, artifact_folder, fid, score

from harness.metrics.base import MetricValue
from harness.store import Store

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts"

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs the playwright package (pip install playwright; "
                                  "it drives Debian's chromium, never `playwright install`)")
from leaderboard.screenshots import CHROMIUM, open_browser, serve, wait_for_tables  # noqa: E402

if not Path(CHROMIUM).exists():
    pytest.skip("the browser test needs Debian's chromium at /usr/bin/chromium: apt-get install chromium "
                "(scripts/setup.sh test installs it)", allow_module_level=True)


def decoding(store: Store, method: str, speedup: float, exact: float, nll: float | None, lossless: bool,
             **settings) -> str:
    metrics = [MetricValue("speedup", speedup, True, "x"), MetricValue("exact_match_rate", exact, True),
               MetricValue("ttft_ms", 3.5, False, "ms")]
    if nll is not None:
        metrics.append(MetricValue("quality_target_nll", nll, False, "nats/token"))
    return add_run(store, task="decode-board", method=method, primary="speedup", metrics=metrics,
                   provenance={"lossless": lossless}, settings=settings)


@pytest.fixture
def served(results_dir, tmp_path):
    """A small store served by `arbench leaderboard` on a free localhost port; yields (url, run ids)."""
    store = Store()
    ids = {
        "a": add_run(store, method="llamagen-b", settings={"cfg": 2.0}, metrics=[fid(5.2, 0.2), score(190)],
                     provenance={"params": 111e6, "packages": {"torch": "2.5.1"}}),
        "a2": add_run(store, method="llamagen-b", settings={"cfg": 4.0}, metrics=[fid(6.0, 0.2)],  # no IS: blank
                      provenance={"params": 111e6, "packages": {"torch": "2.6.0"}}),
        "b": add_run(store, method="var-d16", family="next-scale", metrics=[fid(3.4, 0.2), score(270)],
                     provenance={"params": 310e6}, artifacts=artifact_folder(tmp_path / "run-b")),
        "paper": add_run(store, method="llamagen-b", source="reported", label="LlamaGen-B (paper)",
                         protocol="paper", metrics=[fid(5.46)], provenance={"params": 111e6}),
        "evil": add_run(store, task="zz-evil-board", method="m-evil", label=EVIL_LABEL, metrics=[fid(1.0)],
                        task_description=EVIL_TASK_DESCRIPTION),
        "spec": decoding(store, "speculative", 1.8, 1.0, None, True),
        "block": decoding(store, "blockwise", 1.4, 1.0, None, True, top_k=1),
        "block3": decoding(store, "blockwise", 2.6, 0.0, 2.9, False, top_k=3),
    }
    store.dispose()
    with serve(f"sqlite:///{results_dir / 'arbench.db'}") as base:
        yield base, ids


def cells(page) -> list[str]:
    return page.locator("[data-testid=stDataFrame] td").all_inner_texts()


def test_overview_board_diff_and_run_page_render_in_chromium(served):
    base, ids = served
    SCREENSHOTS.mkdir(exist_ok=True)
    with open_browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

        page.goto(base + "/", timeout=90_000)  # the landing page: every task
        page.wait_for_selector("text=All tasks", timeout=90_000)
        wait_for_tables(page)
        body = page.inner_text("body")
        assert "ARBench leaderboard" in body and "Deploy" not in body  # the toolbar is in viewer mode
        for task in ("toy-board", "decode-board", "zz-evil-board"):
            assert task in body
        assert "3 reproduced by ARBench · 1 reported in a paper" in body
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-overview.png"), full_page=True)

        page.locator(".st-key-open-toy-board button").click()  # one click to a board
        page.wait_for_selector("[data-testid=stDataFrame] td:has-text('var-d16')", state="attached", timeout=90_000)
        page.wait_for_url(re.compile(r"[?&]task=toy-board"), timeout=30_000)  # the board's link (sent after its rows)
        assert page.locator(".vega-embed").count() == 0  # the plots tab is built only when opened

        page.goto(f"{base}/?task=toy-board", timeout=90_000)  # a linked board
        page.wait_for_selector("[data-testid=stDataFrame] td:has-text('var-d16')", state="attached", timeout=90_000)
        wait_for_tables(page)
        body = page.inner_text("body")
        assert "Protocol group P1 · 3 rows" in body and "Protocol group P2 · 1 row" in body
        shown = cells(page)
        assert "cfg=2.0" in shown and "cfg=4.0" in shown  # two llamagen-b rows told apart
        assert "reported in a paper" in shown and "None" not in shown and "nan" not in shown  # in text cells
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-board.png"), full_page=True)
        page.get_by_role("tab", name="plots: quality against cost").click()
        page.wait_for_selector(".vega-embed", state="attached", timeout=30_000)
        assert "board-view=" in page.url  # the open tab is in the link too
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-plots.png"), full_page=True)

        page.goto(f"{base}/?task=decode-board", timeout=90_000)  # lossy and lossless never in one ranking
        page.wait_for_selector("text=lossy decoding", timeout=90_000)
        wait_for_tables(page)
        body = page.inner_text("body")
        assert "Protocol group P1 · 2 rows · reproduced by ARBench · lossless decoding" in body
        assert "Protocol group P2 · 1 row · reproduced by ARBench · lossy decoding" in body
        shown = cells(page)
        assert "None" not in shown and "top_k=3" in shown, "|".join(shown)

        page.goto(f"{base}/?compare={ids['a']},{ids['a2']}", timeout=60_000)
        page.wait_for_selector("text=Comparing two runs", timeout=60_000)
        wait_for_tables(page)
        body = page.inner_text("body")
        assert "Comparable." in body and "packages.torch" in cells(page) and "method.cfg" in cells(page)
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-diff.png"), full_page=True)

        page.goto(f"{base}/?run={ids['b']}", timeout=60_000)
        page.wait_for_selector("text=Artifacts", timeout=60_000)
        page.wait_for_selector("[data-testid=stImage] img", timeout=30_000)
        assert page.locator("audio").count() == 1
        assert "method:var-d16" in page.inner_text("body")
        wait_for_tables(page)
        shown = cells(page)  # no text cell reads "None" (the grid's drawn blanks: test_leaderboard_app.py)
        assert "inception_score" in shown and "None" not in shown
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-run.png"), full_page=True)

        for url in (f"{base}/?task=zz-evil-board", f"{base}/?run={ids['evil']}"):
            page.goto(url, timeout=60_000)
            page.wait_for_selector("text=xss", timeout=60_000)
            time.sleep(1)  # give an injected handler the chance to run
            assert page.locator("img[src=x]").count() == 0 and page.locator("script:has-text('__xss')").count() == 0
            assert page.evaluate("window.__xss") is None and dialogs == []
        assert EVIL_LABEL in page.inner_text("h3")
        page.screenshot(path=str(SCREENSHOTS / "leaderboard-injection.png"), full_page=True)
