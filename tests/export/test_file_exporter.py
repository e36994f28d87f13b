"""The OTLP JSON lines file exporter: whole lines only when the disk fills, the path followed
across a rotation, and nothing written where someone else planted a link or a file."""

import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

import spec_tracing
from spec_tracing.export.exporters import OtlpJsonFileExporter
from spec_tracing.report.otlp_json import read_spans


def _spans(n, tag="s"):
    tracer = TracerProvider().get_tracer("test")
    out = []
    for i in range(n):
        span = tracer.start_span(f"{tag}-{i}", attributes={"pad": "x" * 200})
        span.end()
        out.append(span)
    return out


def test_a_disk_that_fills_and_frees_leaves_whole_lines_and_honest_counts(tmp_path):
    """RLIMIT_FSIZE stands in for a full filesystem (EFBIG where ENOSPC would be): each write
    past it fails part-way. Every line left is JSON, and the spans readable are exactly those
    of the exports that succeeded."""
    path = tmp_path / "t.jsonl"
    script = textwrap.dedent(f"""
        import resource, signal
        from opentelemetry.sdk.trace import TracerProvider
        from spec_tracing.export.exporters import OtlpJsonFileExporter
        from opentelemetry.sdk.trace.export import SpanExportResult
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        tracer = TracerProvider().get_tracer("t")
        def spans(n):
            out = [tracer.start_span(f"s{{i}}", attributes={{"pad": "x" * 200}}) for i in range(n)]
            for s in out: s.end()
            return out
        exporter = OtlpJsonFileExporter({str(path)!r})
        ok = 0
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))  # the disk fills
        for _ in range(12):
            if exporter.export(spans(10)) == SpanExportResult.SUCCESS:
                ok += 10
        full = ok
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space freed
        for _ in range(3):
            if exporter.export(spans(10)) == SpanExportResult.SUCCESS:
                ok += 10
        exporter.shutdown()
        print(full, ok)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    full, ok = map(int, done.stdout.split())
    assert 0 < full < 120  # some exports failed part-way while the disk was full
    assert ok == full + 30  # and all succeeded once it was not
    assert len(read_spans(str(path))) == ok  # every line whole: none refused, none glued


def test_the_path_is_followed_across_a_rotation_and_a_delete(tmp_path):
    path = tmp_path / "t.jsonl"
    exporter = OtlpJsonFileExporter(str(path))
    assert exporter.export(_spans(2, "a")) == SpanExportResult.SUCCESS
    os.rename(path, tmp_path / "t.jsonl.1")  # logrotate's rename
    assert exporter.export(_spans(3, "b")) == SpanExportResult.SUCCESS
    os.unlink(path)  # deleted
    assert exporter.export(_spans(4, "c")) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert [s.name[0] for s in read_spans(str(tmp_path / "t.jsonl.1"))] == ["a"] * 2
    assert [s.name[0] for s in read_spans(str(path))] == ["c"] * 4
    assert exporter.export(_spans(1)) == SpanExportResult.FAILURE  # shut down: counted


@pytest.fixture
def shared_dir(tmp_path):
    """A directory like /tmp: sticky, writable by everyone."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def test_a_link_planted_in_a_shared_directory_is_not_followed(shared_dir, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (shared_dir / "t.jsonl").symlink_to(victim)
    with pytest.raises(spec_tracing.ConfigError, match="SPEC_TRACING_FILE.*not a link"):
        spec_tracing.enable(exporter="file", file=str(shared_dir / "t.jsonl"))
    assert victim.read_text() == "mine\n"


def test_a_file_others_may_write_is_refused(tmp_path):
    planted = tmp_path / "t.jsonl"
    planted.write_text("")
    planted.chmod(0o666)
    with pytest.raises(spec_tracing.ConfigError, match="writable by any user"):
        spec_tracing.enable(exporter="file", file=str(planted))
    assert planted.read_text() == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user owns needs root")
def test_a_file_another_user_owns_is_refused(shared_dir):
    planted = shared_dir / "t.jsonl"
    planted.write_text("")
    os.chown(planted, 65534, 65534)
    with pytest.raises(spec_tracing.ConfigError, match="owned by another user"):
        spec_tracing.enable(exporter="file", file=str(planted))
    assert planted.read_text() == ""


@pytest.mark.parametrize("device", ["/dev/null", "/dev/stdout"])
def test_devices_and_the_standard_streams_are_still_outputs(device):
    spec_tracing.enable(exporter="file", file=device, export_process=False, metrics=False)
    spec_tracing.ReqTimeStats(rid="r").finish()
    assert spec_tracing.flush(5000)
    spec_tracing.shutdown()
    assert spec_tracing.lifecycle.last_stats()["spans"] == 1
