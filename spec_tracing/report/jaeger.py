"""Spans read from an OTLP JSON file -> the JSON Jaeger's UI accepts for upload ("JSON File"
on its search page): the shape of Jaeger's own /api/traces answer, one entry per trace."""

from __future__ import annotations

from collections import defaultdict

from .otlp_json import OtlpSpan

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


def to_jaeger(spans: list[OtlpSpan]) -> dict:
    """{"data": [trace, ...]}; within a trace, one process per distinct resource."""
    by_trace: dict[str, list[OtlpSpan]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    data = []
    for trace_id, members in by_trace.items():
        processes: dict[tuple, str] = {}
        out_spans = []
        for span in sorted(members, key=lambda s: s.start_ns):
            resource_key = tuple(sorted((k, str(v)) for k, v in span.resource.items()))
            process_id = processes.setdefault(resource_key, f"p{len(processes) + 1}")
            tags = [_tag(k, v) for k, v in span.attributes.items()]
            if span.status_code == _STATUS_ERROR:
                tags += [_tag("error", True), _tag("otel.status_code", "ERROR")]
            out_spans.append(
                {
                    "traceID": trace_id,
                    "spanID": span.span_id,
                    "operationName": span.name,
                    "references": (
                        [
                            {
                                "refType": "CHILD_OF",
                                "traceID": trace_id,
                                "spanID": span.parent_span_id,
                            }
                        ]
                        if span.parent_span_id
                        else []
                    ),
                    "startTime": span.start_ns // 1000,  # microseconds
                    "duration": max(0, span.end_ns - span.start_ns) // 1000,
                    "tags": tags,
                    "logs": [],
                    "processID": process_id,
                    "warnings": None,
                    "flags": 1,
                }
            )
        data.append(
            {
                "traceID": trace_id,
                "spans": out_spans,
                "processes": {
                    pid: {
                        "serviceName": dict(key).get("service.name", "unknown_service"),
                        "tags": [_tag(k, v) for k, v in key if k != "service.name"],
                    }
                    for key, pid in processes.items()
                },
                "warnings": None,
            }
        )
    return {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}
