import os

import pytest

import spec_tracing

TRACING_VARIABLES = ("SPEC_TRACING_", "OTEL_")


def clean_env() -> dict[str, str]:
    """This environment without tracing variables, for a child process the test configures."""
    return {k: v for k, v in os.environ.items() if not k.startswith(TRACING_VARIABLES)}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Each test starts with no tracing variables set and tracing off, and ends with it off."""
    for name in list(os.environ):
        if name.startswith(TRACING_VARIABLES):
            monkeypatch.delenv(name)
    yield
    spec_tracing.shutdown()


class Req:
    """An engine request as engines shape them: the plugin only needs `.time_stats`."""

    def __init__(self, rid):
        self.rid = rid
        self.time_stats = spec_tracing.ReqTimeStats(rid=rid)


class Batch:
    def __init__(self, reqs):
        self.reqs = reqs


def assert_wraps_and_restores(instrumentor, names: dict) -> None:
    """instrument() replaces every named method of the engine's classes, and uninstrument()
    puts back the very same function objects."""
    originals = {(cls, n): vars(cls)[n] for cls, ns in names.items() for n in ns}
    assert instrumentor._check_dependency_conflicts() is None  # the installed version is supported
    instrumentor.instrument()
    try:
        assert all(vars(cls)[n] is not f for (cls, n), f in originals.items())
    finally:
        instrumentor.uninstrument()
    assert {(cls, n): vars(cls)[n] for (cls, n) in originals} == originals
