"""Spans read from an OTLP JSON file -> the JSON Jaeger's UI accepts for upload ("JSON File"
on its search page): the shape of Jaeger's own /api/traces answer, one entry per trace."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from .otlp_json import OtlpSpan, dumps

_STATUS_ERROR = 2


def _tag(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return {"key": key, "type": "string", "value": str(value)}


_KINDS = {2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _span_tags(span: OtlpSpan) -> list[dict]:
    """The span's attributes, plus what Jaeger's own OTLP translation adds as tags."""
    tags = [_tag(k, v) for k, v in span.attributes.items()]
    name, version = span.scope
    if name:
        tags.append(_tag("otel.library.name", name))
    if version:
        tags.append(_tag("otel.library.version", version))
    if span.kind in _KINDS:
        tags.append(_tag("span.kind", _KINDS[span.kind]))
    if span.status_code == _STATUS_ERROR:
        tags += [_tag("error", True), _tag("otel.status_code", "ERROR")]
    elif span.status_code == 1:
        tags.append(_tag("otel.status_code", "OK"))
    if span.status_message:
        tags.append(_tag("otel.status_description", span.status_message))
    return tags


def _references(span: OtlpSpan, trace_id: str) -> list[dict]:
    refs = []
    if span.parent_span_id:
        refs.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id})
    refs += [{"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s} for t, s, _ in span.links]
    return refs


def _logs(span: OtlpSpan) -> list[dict]:
    return [
        {
            "timestamp": t // 1000,
            "fields": [_tag("event", name)] + [_tag(k, v) for k, v in a.items()],
        }
        for name, t, a in span.events
    ]


def to_jaeger(spans: list[OtlpSpan]) -> dict:
    """{"data": [trace, ...]}; within a trace, one process per distinct resource."""
    return {"data": list(_traces(spans)), **_TAIL}


_TAIL = {"total": 0, "limit": 0, "offset": 0, "errors": None}


def jaeger_chunks(spans: list[OtlpSpan]) -> Iterator[str]:
    """to_jaeger's JSON text (as otlp_json.dumps writes it), a trace at a time: the file is
    written without the whole document in memory."""
    yield '{"data":['
    for i, trace in enumerate(_traces(spans)):
        yield ("," if i else "") + dumps(trace)
    yield "]," + dumps(_TAIL)[1:]


def _traces(spans: list[OtlpSpan]) -> Iterator[dict]:
    by_trace: dict[str, list[OtlpSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    for trace_id, members in by_trace.items():
        processes: dict[tuple, str] = {}
        resources: dict[str, dict] = {}  # process id -> the resource, values as they were
        out_spans = []
        for span in sorted(members, key=lambda s: s.start_ns):
            resource_key = tuple(sorted((k, repr(v)) for k, v in span.resource.items()))
            process_id = processes.setdefault(resource_key, f"p{len(processes) + 1}")
            resources.setdefault(process_id, span.resource)
            out_spans.append(
                {
                    "traceID": trace_id,
                    "spanID": span.span_id,
                    "operationName": span.name,
                    "references": _references(span, trace_id),
                    "startTime": span.start_ns // 1000,  # microseconds
                    "duration": max(0, span.end_ns - span.start_ns) // 1000,
                    "tags": _span_tags(span),
                    "logs": _logs(span),
                    "processID": process_id,
                    "warnings": None,
                    "flags": 1,
                }
            )
        yield (
            {
                "traceID": trace_id,
                "spans": out_spans,
                "processes": {
                    pid: {
                        "serviceName": str(res.get("service.name", "unknown_service")),
                        "tags": [_tag(k, v) for k, v in res.items() if k != "service.name"],
                    }
                    for pid, res in resources.items()
                },
                "warnings": None,
            }
        )
