"""The pytest plugin as users get it: loaded through its pytest11 entry point in a fresh pytest
run, its assertions pass on right traces and fail, with the offending spans listed, on wrong
ones; tracing is off again after each test."""

import subprocess
import sys

from conftest import clean_env

USER_TESTS = """
import pytest

import spec_tracing
from spec_tracing import ReqTimeStats, set_spec_verify_end_time_batch, set_time_batch


class Req:
    def __init__(self, rid):
        self.time_stats = ReqTimeStats(rid=rid)


def step(reqs, accepted, extend=False):
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_start_time)
    set_time_batch(reqs, ReqTimeStats.set_spec_draft_end_time)
    set_time_batch(reqs, ReqTimeStats.set_spec_verify_start_time)
    set_spec_verify_end_time_batch(reqs, accepted, proposed=3)
    if extend:
        set_time_batch(reqs, ReqTimeStats.set_spec_draft_extend_start_time)
        set_time_batch(reqs, ReqTimeStats.set_spec_draft_extend_end_time)


def run(rids, steps, extend=False):
    reqs = [Req(r) for r in rids]
    for accepted in steps:
        step(reqs, accepted, extend)
    for r in reqs:
        r.time_stats.finish()


def test_right_traces_pass(spec_spans):
    run(["a", "b"], [[1, 2], [0, 3]])
    spec_spans.assert_every_request_has_stages(["spec_draft", "spec_verify"])
    spec_spans.assert_accepted_sum(6)
    spec_spans.assert_max_level(2)
    groups = spec_spans.by_request()
    for root in spec_spans.roots():
        spec_spans.assert_children_of(root, groups[root.context.span_id])


def test_missing_verify_fails(spec_spans):
    req = Req("lonely")
    set_time_batch([req], ReqTimeStats.set_spec_draft_start_time)
    set_time_batch([req], ReqTimeStats.set_spec_draft_end_time)
    req.time_stats.finish()
    spec_spans.assert_every_request_has_stages(["spec_draft", "spec_verify"])


def test_wrong_sum_fails(spec_spans):
    run(["a"], [[1], [2]])
    spec_spans.assert_accepted_sum(7)


def test_above_level_fails(spec_spans):
    run(["a"], [[1]], extend=True)
    spec_spans.assert_max_level(2)


def test_foreign_children_fails(spec_spans):
    run(["a", "b"], [[1, 1]])
    root_a, root_b = sorted(spec_spans.roots(), key=lambda s: s.attributes["spec_request.id"])
    spec_spans.assert_children_of(root_a, spec_spans.by_request()[root_b.context.span_id])


def test_tracing_is_off_after_the_fixture():
    assert not spec_tracing.get_global_tracing_enabled()


@pytest.mark.spec_tracing_level(2)
def test_a_level_marker_sets_the_level(spec_spans):
    run(["a"], [[1]], extend=True)  # draft_extend is level 3: not recorded at 2
    spec_spans.assert_max_level(2)
    assert spec_spans.spans("spec_verify")
"""

LEVEL_FROM_ENV = """
from spec_tracing import ReqTimeStats, set_time_batch


def test_the_environment_level_is_honoured(spec_spans):
    req = ReqTimeStats(rid="r")
    set_time_batch([req], ReqTimeStats.set_spec_draft_extend_start_time)
    set_time_batch([req], ReqTimeStats.set_spec_draft_extend_end_time)
    req.finish()
    spec_spans.assert_max_level(2)
"""


def test_plugin_assertions_in_a_users_test_run(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    env = clean_env()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    assert "4 failed, 3 passed" in out, out[-4000:]
    for test in ("missing_verify", "wrong_sum", "above_level", "foreign_children"):
        assert f"FAILED test_user.py::test_{test}_fails" in out
    assert "request lonely has no ['spec_verify'] spans" in out
    assert "accepted_tokens sums to 3, expected 7" in out
    assert "spans above level 2:" in out and "spec_draft_extend trace=" in out
    assert "not children of" in out


def test_the_fixture_honours_spec_tracing_level(tmp_path):
    # The README's example: assert_max_level(2) "when run at SPEC_TRACING_LEVEL=2".
    (tmp_path / "test_env_level.py").write_text(LEVEL_FROM_ENV)
    env = {**clean_env(), "SPEC_TRACING_LEVEL": "2"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_env_level.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert "1 passed" in done.stdout, done.stdout[-3000:]
