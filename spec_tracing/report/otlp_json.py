"""Reading OTLP/JSON trace files: one ExportTraceServiceRequest per line, as our file exporter
and the OpenTelemetry Collector's file exporter write them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


class TraceFileError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


@dataclass
class OtlpSpan:
    """A span as read back from a file or off the wire (ids as hex strings)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int
    resource: dict = field(default_factory=dict)


def _any_value(value: dict) -> object:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return None


def _spans_of(doc: object, where: str) -> Iterator[OtlpSpan]:
    if not isinstance(doc, dict) or "resourceSpans" not in doc:
        raise TraceFileError(f"{where}: not an OTLP trace export request (no resourceSpans)")
    try:
        for rs in doc["resourceSpans"]:
            resource = {
                a["key"]: _any_value(a.get("value", {}))
                for a in rs.get("resource", {}).get("attributes", [])
            }
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    yield OtlpSpan(
                        s["name"],
                        s["traceId"],
                        s["spanId"],
                        s.get("parentSpanId", ""),
                        int(s["startTimeUnixNano"]),
                        int(s["endTimeUnixNano"]),
                        {a["key"]: _any_value(a.get("value", {})) for a in s.get("attributes", [])},
                        int(s.get("status", {}).get("code", 0)),
                        resource,
                    )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TraceFileError(f"{where}: malformed span ({type(exc).__name__}: {exc})") from None


def read_spans(path: str) -> list[OtlpSpan]:
    """All spans in `path`. A bad line is a TraceFileError naming it, except a truncated last
    line (a run cut off mid-write), which is skipped with a warning."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot be read ({exc.strerror})") from None
    spans: list[OtlpSpan] = []
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    for index, (number, line) in enumerate(numbered):
        where = f"{path}:{number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            if index == len(numbered) - 1 and line.lstrip().startswith("{"):
                logger.warning("%s: truncated last line skipped (%s)", where, exc.msg)
                break
            raise TraceFileError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        spans.extend(_spans_of(doc, where))
    return spans
