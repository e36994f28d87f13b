#!/usr/bin/env bash
# The SGLang tier: real sglang 0.5.23 on this CPU in its own environment (.venv-sglang, ~1.7 GB),
# with the test-only stand-ins of tests/sglang_tier/standins (no CPU build of sgl_kernel exists).
#   bash scripts/test-sglang.sh      # creates/updates .venv-sglang, runs tests marked sglang
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-sglang/bin/python ]; then
    python3 -m venv .venv-sglang
fi
.venv-sglang/bin/python -m pip install --quiet --upgrade pip
# Every package pinned, none resolved: see requirements-sglang.txt.
.venv-sglang/bin/python -m pip install --quiet --no-deps -r requirements-sglang.txt
.venv-sglang/bin/python -m pip install --quiet --no-deps -e .
# torchvision's wheel is a CUDA build: make it importable beside the CPU torch (test-only).
.venv-sglang/bin/python tests/sglang_tier/patch_torchvision.py

REQUIRE_SGLANG=1 HF_HUB_OFFLINE=1 .venv-sglang/bin/python -m pytest -q -m sglang tests/sglang_tier
