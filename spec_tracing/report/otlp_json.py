"""Reading OTLP/JSON trace files: one ExportTraceServiceRequest per line, as our file exporter
and the OpenTelemetry Collector's file exporter write them."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from sys import intern

logger = logging.getLogger(__name__)


class TraceFileError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


@dataclass(slots=True)
class OtlpSpan:
    """A span as read back from a file or off the wire (ids as hex strings). Slots, interned
    names and attribute keys, shared empty event and link lists: a report holds every span of
    a file (tests/report/test_report.py::test_report_memory_per_span)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict
    status_code: int
    resource: dict = field(default_factory=dict)
    scope: tuple[str, str] = ("", "")  # instrumentation scope (name, version)
    kind: int = 1  # OTLP SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer
    status_message: str = ""
    events: list | tuple = ()  # (name, time_ns, attributes)
    links: list | tuple = ()  # (trace_id, span_id, attributes)


def _any_value(value: dict) -> object:
    for key in ("stringValue", "boolValue", "bytesValue"):  # bytes stay base64 text
        if key in value:
            return value[key]
    if "doubleValue" in value:
        return float(value["doubleValue"])  # "NaN", "Infinity" are strings in OTLP JSON
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {
            kv["key"]: _any_value(kv.get("value", {}))
            for kv in value["kvlistValue"].get("values", [])
        }
    return None


_KIND_NAMES = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
               "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}  # fmt: skip


def _kind(value) -> int:
    return _KIND_NAMES.get(value, 1) if isinstance(value, str) else int(value)


def _attributes(node: dict) -> dict:
    # Keys repeat on every span: one string each, not one per span.
    return {intern(a["key"]): _any_value(a.get("value", {})) for a in node.get("attributes", [])}


_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_OTHER_SIGNALS = ("resourceMetrics", "resourceLogs", "resourceProfiles")


def _status(span: dict) -> int:
    code = span.get("status", {}).get("code", 0)
    return _STATUS_NAMES.get(code, 0) if isinstance(code, str) else int(code)


def _spans_of(doc: object, where: str, shared: dict | None = None) -> Iterator[OtlpSpan]:
    """The spans of one export request. `shared` (a dict kept across a file's lines) makes a
    trace id or parent id one string however many spans carry it."""
    share = (lambda x: x) if shared is None else (lambda x: shared.setdefault(x, x))
    if (
        isinstance(doc, dict)
        and "resourceSpans" not in doc
        and any(k in doc for k in _OTHER_SIGNALS)
    ):
        logger.warning(
            "%s: not traces (%s); skipped", where, next(k for k in doc if k in _OTHER_SIGNALS)
        )
        return
    if not isinstance(doc, dict) or "resourceSpans" not in doc:
        raise TraceFileError(f"{where}: not an OTLP trace export request (no resourceSpans)")
    try:
        for rs in doc["resourceSpans"]:
            resource = {
                a["key"]: _any_value(a.get("value", {}))
                for a in rs.get("resource", {}).get("attributes", [])
            }
            for ss in rs.get("scopeSpans", []):
                scope = ss.get("scope", {})
                scope_pair = (scope.get("name", ""), scope.get("version", ""))
                for s in ss.get("spans", []):
                    # The Collector omits fields at their default (proto3 JSON): an empty name,
                    # a zero time. Ids are hex, in either case.
                    yield OtlpSpan(
                        intern(s.get("name", "")),
                        share(s["traceId"].lower()),
                        s["spanId"].lower(),
                        share(s.get("parentSpanId", "").lower()),
                        int(s.get("startTimeUnixNano", 0)),
                        int(s.get("endTimeUnixNano", 0)),
                        _attributes(s),
                        _status(s),
                        resource,
                        scope_pair,
                        _kind(s.get("kind", 1)),
                        s.get("status", {}).get("message", ""),
                        [
                            (e.get("name", ""), int(e.get("timeUnixNano", 0)), _attributes(e))
                            for e in s.get("events", ())
                        ] or (),
                        [
                            (x["traceId"].lower(), x["spanId"].lower(), _attributes(x))
                            for x in s.get("links", ())
                        ] or (),
                    )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        why = f"{type(exc).__name__}: {exc!s:.120}"
        raise TraceFileError(f"{where}: malformed span ({why})") from None


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line, read a line at a time."""
    try:
        # Lines end at "\n" only: U+2028, U+2029 and U+0085 are valid inside JSON strings
        # (text mode's universal newlines would cut a line there).
        with open(path, encoding="utf-8", newline="\n") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise TraceFileError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise TraceFileError(f"{path}: not a text file (OTLP JSON lines expected)") from None


def read_spans(path: str) -> list[OtlpSpan]:
    """All spans in `path`, each once. A bad line is a TraceFileError naming it, except a
    truncated last line (a run cut off mid-write), which is skipped with a warning. A span
    repeated in the file (the same trace and span id: a file appended to twice, an export
    retried) is read once, and a warning counts the repeats."""
    spans: list[OtlpSpan] = []
    seen: set = set()
    shared: dict = {}
    repeated = 0
    bad: tuple | None = None  # a line that is not JSON: an error unless it is the last one
    any_line = False
    for number, line in _lines(path):
        any_line = True
        if bad is not None:
            raise bad[0]
        where = f"{path}:{number}"
        try:
            doc = json.loads(line)
        except RecursionError:
            raise TraceFileError(f"{where}: JSON nested too deep to read") from None
        except json.JSONDecodeError as exc:
            error = TraceFileError(f"{where}: not JSON ({exc.msg} at column {exc.colno})")
            if not line.lstrip().startswith("{"):
                raise error from None
            bad = (error, where, exc.msg)
            continue
        for span in _spans_of(doc, where, shared):
            key = (span.trace_id, span.span_id)
            if key in seen:
                repeated += 1
                continue
            seen.add(key)
            spans.append(span)
    if not any_line:
        raise TraceFileError(f"{path}: empty (no OTLP JSON lines)")
    if bad is not None:
        logger.warning("%s: truncated last line skipped (%s)", bad[1], bad[2])
    if repeated:
        logger.warning("%s: %d spans repeated in the file (same trace and span id) read once",
                       path, repeated)  # fmt: skip
    return spans


def by_root(spans: list[OtlpSpan], root_name: str = "spec_request") -> tuple:
    """(roots by start, their children by root span id, the other spans by trace id): how the
    views group a file's spans into requests, spans whose root is not in the file apart."""
    roots = sorted((s for s in spans if s.name == root_name), key=lambda s: s.start_ns)
    root_ids = {r.span_id for r in roots}
    children: dict[str, list[OtlpSpan]] = {}
    orphans: dict[str, list[OtlpSpan]] = {}
    for s in spans:
        if s.name == root_name:
            continue
        if s.parent_span_id in root_ids:
            children.setdefault(s.parent_span_id, []).append(s)
        else:
            orphans.setdefault(s.trace_id, []).append(s)
    return roots, children, orphans


def json_safe(value: object) -> object:
    """`value` with every non-finite float as OTLP JSON writes it ("NaN", "Infinity",
    "-Infinity"): json.dumps would write bare NaN, which no JSON reader takes."""
    if type(value) is float:
        if math.isfinite(value):
            return value
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def dumps(value: object) -> str:
    """JSON text for the report's outputs: strict JSON whatever the trace held."""
    return json.dumps(json_safe(value), allow_nan=False, separators=(",", ":"))
