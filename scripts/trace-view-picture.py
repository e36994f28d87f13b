"""Makes docs/trace-view.png, the README's picture of the trace view: a demo run (64 requests,
the defaults), its page, and Chromium's screenshot of it at 1920 x 1080 with a verify bar's
Details shown. Run it on a quiet machine (the durations in the picture are that machine's):

    python scripts/trace-view-picture.py
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

OUT = Path(__file__).resolve().parents[1] / "docs" / "trace-view.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        trace, page_file = Path(folder) / "run.jsonl", Path(folder) / "run.html"
        cli = [sys.executable, "-m", "spec_tracing.cli"]
        subprocess.run([*cli, "demo", "--quiet", "--trace-file", str(trace)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        subprocess.run([*cli, "report", str(trace), "--html", str(page_file)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.goto(page_file.as_uri())
            page.wait_for_function("window.specTrace !== undefined")
            rid = page.evaluate("specTrace.order()[0]")
            bars = page.evaluate("id => specTrace.bars(id)", rid)
            index = next(i for i, b in enumerate(bars) if b["name"] == "spec_verify")
            point = page.evaluate("([id, i]) => specTrace.barPoint(id, i)", [rid, index])
            page.mouse.click(point["x"], point["y"])
            page.screenshot(path=str(OUT))
            browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
