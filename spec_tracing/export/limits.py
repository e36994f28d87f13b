"""OpenTelemetry's span attribute limits, applied where spans are built by hand (the exporter
process and the in-process outputs make spans without the SDK's Span, which is where the SDK
applies them).

OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT (else OTEL_ATTRIBUTE_COUNT_LIMIT; default 128, the SDK's) and
OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT (else OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT). The SDK has no
default length; here it is 32768 characters, so that one request's oversized value (a 5 MB
attribute made its export request exceed a collector's 4 MB limit, failing the whole batch of
2,002 spans) costs that value's tail, never its neighbours' spans. What is cut is counted."""

from __future__ import annotations

from collections.abc import Mapping

from ..semconv import SpanAttr

_OWN = frozenset(v for k, v in vars(SpanAttr).items() if not k.startswith("_"))

DEFAULT_COUNT = 128
DEFAULT_VALUE_LENGTH = 32768


def _limit(otel: Mapping[str, str], names: tuple[str, str], default: int) -> int:
    for name in names:
        raw = otel.get(name)
        if raw is not None and raw.strip():
            return int(raw)  # Settings checked it
    return default


class AttributeLimits:
    def __init__(self, count: int = DEFAULT_COUNT, length: int = DEFAULT_VALUE_LENGTH):
        self.count, self.length = count, length
        self.limited = 0  # values truncated or attributes dropped

    @classmethod
    def from_otel(cls, otel: Mapping[str, str]) -> AttributeLimits:
        return cls(
            _limit(otel, ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT"),
                   DEFAULT_COUNT),
            _limit(otel, ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                          "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"), DEFAULT_VALUE_LENGTH),
        )  # fmt: skip

    def _too_long(self, value: object) -> bool:
        if isinstance(value, str):
            return len(value) > self.length
        if isinstance(value, (list, tuple)):
            return any(isinstance(v, str) and len(v) > self.length for v in value)
        return False

    def apply(self, attrs: dict) -> dict:
        """`attrs` itself when within the limits (the common case: one pass, no copy), else a
        limited copy: the first `count` attributes, strings cut to `length`."""
        if len(attrs) <= self.count and not any(map(self._too_long, attrs.values())):
            return attrs
        # spec-tracing's own names first (the request id, the acceptance summary), then the
        # engine's and the user's in their order: a count limit drops the latter's tail.
        ordered = sorted(attrs.items(), key=lambda kv: kv[0] not in _OWN)
        out = {}
        for key, value in ordered:
            if len(out) == self.count:
                self.limited += len(attrs) - self.count
                break
            if self._too_long(value):
                self.limited += 1
                if isinstance(value, str):
                    value = value[: self.length]
                else:
                    value = type(value)(
                        v[: self.length] if isinstance(v, str) else v for v in value
                    )
            out[key] = value
        return out
