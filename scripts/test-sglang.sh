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
# Every package pinned, none resolved: see requirements-sglang.txt. Releases that pin other
# versions of a package get them here (0.5.18: transformers 5.12.1, whose tokenizers range
# ends below 0.23.1; with 0.5.23's transformers its config registry clashes: "'qwen3_asr' is
# already used by a Transformers config").
requirements="$(mktemp)"
sed "s/^sglang==.*/sglang==$version/" requirements-sglang.txt > "$requirements"
case "$version" in
    0.5.18) sed -i "s/^transformers==.*/transformers==5.12.1/; s/^tokenizers==.*/tokenizers==0.22.2/" \
                "$requirements" ;;
esac
"$venv/bin/python" -m pip install --quiet --no-deps -r "$requirements"
rm -f "$requirements"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
# torchvision's wheel is a CUDA build: make it importable beside the CPU torch (test-only).
"$venv/bin/python" tests/sglang_tier/patch_torchvision.py

REQUIRE_SGLANG=1 HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -m sglang tests/sglang_tier
