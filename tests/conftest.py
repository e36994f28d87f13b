import os

import pytest

import spec_tracing


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Each test starts with no tracing variables set and tracing off, and ends with it off."""
    for name in list(os.environ):
        if name.startswith(("SPEC_TRACING_", "OTEL_")):
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
