"""Serve the leaderboard with `arbench leaderboard` and photograph it in headless Chromium.

`python -m leaderboard.screenshots --db URL --out docs/img --task digits-c2i --compare A,B` writes the
overview, the boards (`--task` is repeatable) and a diff as PNG files (what docs/leaderboard.md shows). The browser test uses `serve`
and `open_browser` too. Chromium is Debian's package driven by Playwright (never `playwright install`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(db_url: str, timeout: float = 90) -> Iterator[str]:
    """`arbench leaderboard` on a free localhost port, reading `db_url`; yields its base URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "harness", "--db", db_url, "leaderboard", "--port", str(port), "--address",
         "127.0.0.1"], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"`arbench leaderboard` did not start listening within {timeout:.0f} s")
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@contextmanager
def open_browser():
    """Headless Chromium (Debian's) through Playwright; yields the browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_tables(page, timeout_ms: int = 90_000) -> None:
    """Until the grids' accessible tables hold cells (the grid draws on a canvas; its table is hidden)."""
    page.wait_for_selector("[data-testid=stDataFrame] td", state="attached", timeout=timeout_ms)
    time.sleep(1.0)  # let the canvas finish drawing


def full_height(page, limit: int = 6000) -> None:
    """Grow the viewport to the page's content: Streamlit scrolls inside its main block, so a full-page
    screenshot alone would stop at the window's height."""
    height = page.evaluate("Math.max(...Array.from(document.querySelectorAll('[data-testid=stMain], "
                           "[data-testid=stMainBlockContainer]')).map(e => e.scrollHeight), 800)")
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(limit, int(height) + 80)})
    time.sleep(1.0)  # the grids redraw at the new size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="database URL to show")
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder for the PNG files")
    parser.add_argument("--task", required=True, action="append", help="a board to photograph (repeatable)")
    parser.add_argument("--compare", required=True, help="two run ids, A,B, for the diff page")
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with serve(args.db) as base, open_browser() as browser:
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        pages = [("leaderboard-overview", "", "text=All tasks")]
        pages += [(f"leaderboard-board-{task}", f"?task={task}", "text=Protocol group P1") for task in args.task]
        pages += [("leaderboard-diff", f"?compare={args.compare}", "text=Comparing two runs")]
        for name, query, ready in pages:
            page.goto(f"{base}/{query}", timeout=90_000)
            page.wait_for_selector(ready, timeout=90_000)
            wait_for_tables(page)
            full_height(page)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            page.set_viewport_size({"width": args.width, "height": 1000})
            print(out / f"{name}.png")


if __name__ == "__main__":
    main()
