"""pytest plugin: span assertions for your CI (loaded automatically through the pytest11 entry
point once spec-tracing is installed).

    def test_my_engine_traces(spec_spans):
        run_my_engine()
        spec_spans.assert_every_request_has_stages(["spec_draft", "spec_verify"])
        spec_spans.assert_accepted_sum(expected)

`spec_spans` enables tracing at level 3 with an in-memory exporter for the test and shuts it down
(restoring the level) afterwards.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pytest

from ..semconv import SpanAttr
from ..stages import RequestStage, get_stage

if TYPE_CHECKING:  # imported when a test asks for the fixture: pytest loads this plugin in
    # every run of every project where spec-tracing is installed.
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = RequestStage.REQUEST.name


def describe(spans: Iterable[ReadableSpan], limit: int = 12) -> str:
    """A compact listing of spans for failure messages."""
    spans = list(spans)
    lines = []
    for s in spans[:limit]:
        attrs = dict(s.attributes or {})
        shown = {
            k: attrs[k]
            for k in (SpanAttr.STEP, SpanAttr.ACCEPTED_TOKENS, SpanAttr.REQUEST_ID)
            if k in attrs
        }
        parent = f"{s.parent.span_id:016x}" if s.parent else "-"
        lines.append(
            f"  {s.name} trace={s.context.trace_id:032x}"
            f" span={s.context.span_id:016x} parent={parent} {shown}"
        )
    if len(spans) > limit:
        lines.append(f"  ... and {len(spans) - limit} more")
    return "\n".join(lines) or "  (no spans)"


def _flush() -> None:
    from ..lifecycle import flush

    flush()


def _level_of(name: str) -> int:
    try:
        return get_stage(name).level
    except ValueError:  # not one of ours
        return -1


class SpanCapture:
    """Spans captured in a test, with assertions phrased as users ask them."""

    def __init__(self, exporter: InMemorySpanExporter):
        self.exporter = exporter

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """All spans so far (after materializing what is buffered), optionally by name."""
        _flush()
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if name is None or s.name == name]

    def roots(self) -> list[ReadableSpan]:
        return self.spans(ROOT)

    def by_request(self) -> dict[int, list[ReadableSpan]]:
        """Stage spans grouped by the span id of the request root they hang under."""
        groups: dict[int, list[ReadableSpan]] = defaultdict(list)
        for s in self.spans():
            if s.name != ROOT and s.parent is not None:
                groups[s.parent.span_id].append(s)
        return groups

    def clear(self) -> None:
        _flush()
        self.exporter.clear()

    def assert_every_request_has_stages(self, stages: Sequence[str]) -> None:
        """Every request root has at least one span of each stage, and for each step index of one
        stage the others have the same step indices."""
        roots = self.roots()
        assert roots, "no request root spans (" + ROOT + ") were recorded"
        groups = self.by_request()
        for root in roots:
            children = groups.get(root.context.span_id, [])
            steps = {
                name: sorted(
                    s.attributes.get(SpanAttr.STEP, -1) for s in children if s.name == name
                )
                for name in stages
            }
            missing = [name for name, found in steps.items() if not found]
            assert not missing, (
                f"request {root.attributes.get(SpanAttr.REQUEST_ID)} has no "
                f"{missing} spans; its spans:\n{describe(children)}"
            )
            first = steps[stages[0]]
            uneven = {n: s for n, s in steps.items() if s != first}
            assert not uneven, (
                f"request {root.attributes.get(SpanAttr.REQUEST_ID)}: steps of "
                f"{stages[0]} {first} differ from {uneven}"
            )

    def assert_accepted_sum(self, expected: int) -> None:
        """accepted_tokens over all spec_verify spans sums to `expected`."""
        verify = self.spans(RequestStage.SPEC_VERIFY.name)
        total = sum(s.attributes.get(SpanAttr.ACCEPTED_TOKENS, 0) for s in verify)
        assert total == expected, (
            f"accepted_tokens sums to {total}, expected {expected}; "
            f"verify spans:\n{describe(verify)}"
        )

    def assert_max_level(self, level: int) -> None:
        """No span belongs to a stage above `level`."""
        above = [s for s in self.spans() if _level_of(s.name) > level]
        assert not above, f"spans above level {level}:\n{describe(above)}"

    def assert_children_of(self, root: ReadableSpan, spans: Iterable[ReadableSpan]) -> None:
        """Each span is in root's trace with root as its parent."""
        wrong = [
            s
            for s in spans
            if s.context.trace_id != root.context.trace_id
            or s.parent is None
            or s.parent.span_id != root.context.span_id
        ]
        assert not wrong, f"not children of {root.context.span_id:016x}:\n{describe(wrong)}"


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers",
        "spec_tracing_level(n): the trace level the spec_spans fixture enables (0-3)",
    )


@pytest.fixture
def spec_spans(request):
    """Tracing on into an in-memory exporter for this test; off again afterwards. The level is
    the test's `@pytest.mark.spec_tracing_level(n)`, else SPEC_TRACING_LEVEL, else 3."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from .. import lifecycle
    from ..record.hotpath import get_trace_level, set_trace_level

    previous_level = get_trace_level()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    marker = request.node.get_closest_marker("spec_tracing_level")
    level = {"level": marker.args[0]} if marker is not None else {}  # else the environment's
    lifecycle.enable(tracer_provider=tracer_provider, **level)
    try:
        yield SpanCapture(exporter)
    finally:
        lifecycle.shutdown()
        tracer_provider.shutdown()
        if previous_level:
            set_trace_level(previous_level)
