"""The package layout's rules, checked on the source: what runs in the engine's process never
imports the exporter's side or the report, the exporter process loads nothing of the engine's
side, the report reads files without the SDK, and the old module paths still import."""

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from conftest import clean_env

PACKAGE = Path(__file__).parents[1] / "spec_tracing"


def _imports(path: Path) -> set[str]:
    """Absolute spec_tracing module names a file imports (relative imports resolved)."""
    parts = ["spec_tracing", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            found.update(n for n in names if n.startswith("spec_tracing"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spec_tracing"))
    return found


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("record", ("export", "metrics", "report", "lifecycle", "testing")),
        ("export", ("record", "metrics", "report", "lifecycle", "testing")),
        ("report", ("record", "export", "metrics", "lifecycle", "testing")),
        ("metrics", ("record", "export", "report", "lifecycle", "testing")),
        ("pipeline", ("record", "report", "lifecycle", "testing")),
    ],
)
def test_folder_imports_only_what_its_side_may(folder, forbidden):
    bad = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / folder).rglob("*.py")
        for name in _imports(path)
        if any(
            name == f"spec_tracing.{f}" or name.startswith(f"spec_tracing.{f}.") for f in forbidden
        )
    }
    assert not bad, sorted(bad)


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        env=clean_env(), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return set(out.stdout.split())


def test_the_exporter_process_loads_nothing_of_the_engine_side():
    loaded = _loaded_after(
        "import spec_tracing.pipeline.serve, spec_tracing.export.exporters, "
        "spec_tracing.metrics.readers, spec_tracing.metrics.instruments"
    )
    assert "spec_tracing.pipeline.serve" in loaded
    assert not {m for m in loaded if m.startswith(("spec_tracing.record", "torch", "wrapt"))}


def test_the_report_reads_files_without_the_sdk():
    loaded = _loaded_after(
        "import spec_tracing.report.otlp_json, spec_tracing.report.summary, "
        "spec_tracing.report.html, spec_tracing.report.jaeger"
    )
    assert "spec_tracing.report.summary" in loaded
    assert not {m for m in loaded if m.startswith(("opentelemetry.sdk", "spec_tracing.export"))}


def test_old_module_paths_import_the_same_objects_with_a_warning():
    from spec_tracing.record.request_trace import ReqTimeStats
    from spec_tracing.testing.otlp_receiver import OtlpReceiver

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from spec_tracing.receiver import OtlpReceiver as old_receiver
        from spec_tracing.timestats import ReqTimeStats as old_stats
    assert old_stats is ReqTimeStats and old_receiver is OtlpReceiver
    assert [w.category for w in caught] == [DeprecationWarning, DeprecationWarning]
    assert "spec_tracing.record.request_trace" in str(caught[1].message)
    assert caught[0].filename == __file__  # points at the importing line, not importlib


def test_span_capture_still_imports_from_spec_tracing_testing():
    from spec_tracing.testing import SpanCapture
    from spec_tracing.testing.pytest_plugin import SpanCapture as new

    assert SpanCapture is new
