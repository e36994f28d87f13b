"""The user's documentation speaks of the product: no lab notebook (where or when something was
tried, what broke before), no issue numbers, no reference to a passage that is not there."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Phrases of a lab notebook: where it was measured as "here", what happened once, issue refs.
NOT_SAID = [
    r"\bthis machine\b", r"\bnot tried\b", r"\bruns here\b", r"\bhere\)", r"\bhere[.,;:]",
    r"\bused to (kill|lose|print|drop|crash|hang|break)", r"\bissue \d", r"(?<![\w/])#\d{2,}\b",
    r"\bonce did\b", r"\bno longer\b",
]  # fmt: skip


def test_the_docs_say_what_holds_not_what_happened():
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for pattern in NOT_SAID:
                if re.search(pattern, line, re.I):
                    found.append(f"{page.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_the_benchmarks_help_cites_no_issue():
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0 and not re.search(r"\bissue\b|#\d", out.stdout), out.stdout
