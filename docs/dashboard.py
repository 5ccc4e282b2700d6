"""The dashboard as a new user sees it: `make ui` in headless Chromium with a fresh profile.

    python docs/dashboard.py [--out docs]     (make screenshots)

runs the headline sweep into a temporary store, serves it with `make ui` on a free loopback
port, looks at what the README promises (the runs table, the parent's children, a child's final
values and plots, the parent's ranking) and saves the README's screenshots. The browser is
Debian's Chromium (`apt-get install chromium`; GRADLAB_CHROMIUM names another), driven by
Playwright; nothing is downloaded. tests/test_dashboard.py runs the same steps on a small sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRADLAB = ROOT / ".venv" / "bin" / "gradlab"
WAIT_MS = 30_000
NAMES = "[col-id='attributes.`Run Name`'] a"  # the runs table's name cells (ag-grid)


def chromium() -> str:
    found = os.environ.get("GRADLAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("no Chromium: apt-get install chromium (or set GRADLAB_CHROMIUM to a Chromium binary)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(store: str, folder: Path, *overrides: str) -> None:
    """The headline sweep (or a part of it) into `store`."""
    cmd = [str(GRADLAB), "-m", "-cd", "sweeps", "-cn", "lr_scale_optimizer", *overrides, f"hydra.sweep.dir={folder}/multirun"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed ({proc.returncode}): {proc.stderr[-2000:]}")


@contextlib.contextmanager
def served(store: str, port: int, timeout: float = 120):
    """`make ui` on the store; yields the URLs it printed: {"home", "runs", "parent"}. Its output
    goes to a file (a pipe nobody reads would fill up with the server's request log and stall it)."""
    log = Path(tempfile.mkstemp(prefix="gradlab-ui-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(["make", "-s", "ui", f"PORT={port}", f"STORE={store}"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        urls = _printed_urls(log, proc, timeout)
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc)
        yield urls
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.unlink(missing_ok=True)


def _printed_urls(log: Path, proc, timeout: float) -> dict:
    markers = {"home": "the MLflow UI on", "runs": "latest sweep", "parent": "its answer"}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text()
        urls = {k: re.search(r"http://\S+", line).group(0) for line in text.splitlines()
                for k, marker in markers.items() if marker in line}
        if len(urls) == len(markers):
            return urls
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    raise RuntimeError("make ui printed no runs view:\n" + log.read_text())


def _wait_healthy(url: str, proc, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"make ui exited ({proc.returncode})")
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the UI did not answer at {url} within {timeout:.0f} s")


def _close_assistant(page) -> None:
    """MLflow 3's assistant panel covers a third of the window; a user closes it once."""
    close = page.locator("button[data-component-id='mlflow.assistant.chat_panel.close']")
    if close.count():
        close.first.click()


def _metrics(page) -> dict[str, str]:
    """The run page's metrics table: name -> the value as shown."""
    text = page.inner_text("body")
    block = text.split("Metrics (", 1)[1].split("Parameters (", 1)[0].splitlines()[3:]
    return dict(zip(block[0::2], block[1::2]))


def look(urls: dict, shots: Path | None = None) -> dict:
    """What a fresh browser profile shows at the printed URLs, and screenshots where asked."""
    from playwright.sync_api import sync_playwright

    seen: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 860}).new_page()  # a fresh profile
            page.goto(urls["runs"])  # the sweep's shared view: its answer's columns, best first
            page.wait_for_selector("text=matching runs", timeout=WAIT_MS)
            with contextlib.suppress(Exception):
                page.wait_for_selector(f"{NAMES}", timeout=WAIT_MS)
            seen["runs_table"] = page.locator(NAMES).count() > 0
            # what the GenAI overview shows instead (seen in a fresh profile without workflowType)
            seen["genai_overview"] = any(page.get_by_text(t, exact=True).first.is_visible()
                                         for t in ("Token Usage", "Detect Issues") if page.get_by_text(t, exact=True).count())
            _close_assistant(page)
            page.wait_for_timeout(1000)
            seen["columns"] = [t for t in page.locator("[role=columnheader]").all_inner_texts() if t.strip()]
            seen["rows"] = [(a.inner_text(), a.get_attribute("href").rsplit("/", 1)[-1]) for a in page.locator(NAMES).all()]
            if shots:
                page.screenshot(path=str(shots / "ui-runs.png"))
            page.set_viewport_size({"width": 1400, "height": 1300})
            page.goto(urls["parent"])
            page.wait_for_selector("text=Description", timeout=WAIT_MS)
            more = page.get_by_text("Show more", exact=True)
            if more.count():
                more.first.click()
            page.wait_for_function("() => Array.from(document.images).some(i => i.src.includes('convergence_map') && i.complete)",
                                   timeout=WAIT_MS)
            page.wait_for_timeout(500)
            seen["parent_text"] = page.inner_text("body")
            seen["parent_images"] = page.evaluate("() => Array.from(document.images).map(i => [i.src, i.naturalWidth])")
            if shots:
                page.screenshot(path=str(shots / "ui-parent.png"), full_page=False)
            page.set_viewport_size({"width": 1400, "height": 860})
            parent = urls["parent"].split("/runs/")[1].split("?")[0]
            base = urls["parent"].split("/runs/")[0]
            page.goto(f"{base}/runs/{parent}/artifacts/ranking.html?workflowType=machine_learning")
            page.wait_for_selector("iframe", timeout=WAIT_MS)
            frame = page.frame_locator("iframe").first
            frame.locator("table").first.wait_for(timeout=WAIT_MS)
            seen["ranking_rows"] = frame.locator("tr").all_inner_texts()
            child_name, child = next(r for r in seen["rows"] if r[1] != parent)
            page.goto(f"{base}/runs/{child}?workflowType=machine_learning")
            page.wait_for_selector("text=Metrics (", timeout=WAIT_MS)
            page.wait_for_timeout(1000)
            seen["child"], seen["child_metrics"] = child, _metrics(page)
            page.goto(f"{base}/runs/{child}/artifacts/plots/loss_curves.png?workflowType=machine_learning")
            page.wait_for_function("() => Array.from(document.images).some(i => i.src.startsWith('blob:') && i.naturalWidth > 0)",
                                   timeout=WAIT_MS)
            seen["plot_size"] = page.evaluate("() => Array.from(document.images).filter(i => i.src.startsWith('blob:'))"
                                              ".map(i => [i.naturalWidth, i.naturalHeight])[0]")
            if shots:
                page.screenshot(path=str(shots / "ui-artifact.png"))
        finally:
            browser.close()
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the screenshots go (default docs/)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        print("dashboard: the headline sweep into a temporary store ...", flush=True)
        sweep(store, Path(tmp))
        with served(store, free_port()) as urls:
            seen = look(urls, args.out)
    problems = [] if seen["runs_table"] and not seen["genai_overview"] else ["the experiment did not open on its runs table"]
    print(f"dashboard: {len(seen['rows']) - 1} children shown; screenshots in {args.out}: ui-runs.png, ui-parent.png, ui-artifact.png")
    if problems:
        sys.exit("dashboard: " + "; ".join(problems))


if __name__ == "__main__":
    main()
