#!/usr/bin/env bash
# The SGLang tier: real SGLang on this CPU in its own environment (~1.7 GB), with the test-only
# stand-ins of tests/sglang_tier/standins (no CPU build of sgl_kernel exists).
#   bash scripts/test-sglang.sh                        # sglang 0.5.23 in .venv-sglang
#   SGLANG_VERSION=0.5.18 bash scripts/test-sglang.sh  # another release, in .venv-sglang-0.5.18
set -euo pipefail
cd "$(dirname "$0")/.."

version="${SGLANG_VERSION:-0.5.23}"
venv=".venv-sglang"
[ "$version" = "0.5.23" ] || venv=".venv-sglang-$version"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Every package pinned, none resolved: see requirements-sglang.txt (its pins serve 0.5.18 too).
requirements="$(mktemp)"
sed "s/^sglang==.*/sglang==$version/" requirements-sglang.txt > "$requirements"
"$venv/bin/python" -m pip install --quiet --no-deps -r "$requirements"
rm -f "$requirements"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
# torchvision's wheel is a CUDA build: make it importable beside the CPU torch (test-only).
"$venv/bin/python" tests/sglang_tier/patch_torchvision.py

REQUIRE_SGLANG=1 HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -m sglang tests/sglang_tier
