"""The public API from several threads at once, with random calls, enable() and shutdown()
among them (the engine's threads, an admin thread reconfiguring, an exit hook): nothing
raises, nothing hangs, and the setup in force afterwards accounts for every span offered."""

import pickle
import random
import sys
import threading
import time

import pytest

import spec_tracing
from spec_tracing import ReqTimeStats, RequestStage, record_batch_stage, set_time_batch
from spec_tracing import set_spec_verify_end_time_batch as verify_end

THREADS = 4
CALLS = 400


def _engine_calls(rng: random.Random, errors: list, reqs: list) -> None:
    # Many requests open at once, as in a busy engine: shutdown() walks them all while the
    # other threads start and end theirs.
    reqs.extend(ReqTimeStats(rid=f"open{i}") for i in range(2000))
    for _ in range(CALLS):
        op = rng.random()
        try:
            if op < 0.25 or not reqs:
                reqs.append(ReqTimeStats(rid=f"r{rng.random()}"))
            elif op < 0.45:
                t = time.perf_counter()
                record_batch_stage(list(reqs[-8:]), RequestStage.SPEC_DRAFT, t - 0.001, t)
            elif op < 0.55:
                batch = list(reqs[-4:])
                set_time_batch(batch, ReqTimeStats.set_spec_verify_start_time)
                verify_end(batch, [rng.randrange(4) for _ in batch], proposed=3)
            elif op < 0.70:
                reqs.pop(rng.randrange(len(reqs))).finish()
            elif op < 0.75:
                reqs.pop(rng.randrange(len(reqs))).abort("cancelled")
            elif op < 0.80:
                reqs.append(pickle.loads(pickle.dumps(reqs.pop())))
            elif op < 0.86:
                spec_tracing.stats()
            elif op < 0.90:
                spec_tracing.flush(rng.choice([0, 10, 200]))
            elif op < 0.95:
                spec_tracing.shutdown(rng.choice([0, 50, 500]))
            else:
                spec_tracing.enable(exporter="none", metrics=False,
                                    export_process=rng.random() < 0.5)  # fmt: skip
        except Exception as exc:  # any exception at all is the failure
            errors.append(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("seed", range(3))
def test_random_calls_from_several_threads_never_raise_or_hang(seed):
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # interleave threads inside the calls, not between them
    errors: list = []
    try:
        spec_tracing.enable(exporter="none", metrics=False)
        threads = [
            threading.Thread(target=_engine_calls, args=(random.Random(seed * 10 + i), errors,
                                                         []), daemon=True)
            for i in range(THREADS)
        ]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not [t for t in threads if t.is_alive()], "a call hung"
    finally:
        sys.setswitchinterval(switch)
        spec_tracing.shutdown(2000)
    assert errors == []


def test_after_the_storm_the_setup_in_force_accounts_for_every_span():
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    test_random_calls_from_several_threads_never_raise_or_hang(7)
    exporter = InMemorySpanExporter()
    spec_tracing.enable(span_exporter=exporter, metrics=False)
    reqs = [ReqTimeStats(rid=f"q{i}") for i in range(50)]
    record_batch_stage(reqs, RequestStage.SPEC_DRAFT, 1.0, 2.0)
    for r in reqs:
        r.finish()
    spec_tracing.shutdown(5000)
    s = spec_tracing.lifecycle.last_stats()
    assert s["spans"] == len(exporter.get_finished_spans()) == 100
    assert s["export_dropped_spans"] == s["export_failed_spans"] == s["export_lost_spans"] == 0
