"""WrapTable: plain-function rows (Inline) installed, never stacked, and undone exactly; seams
resolved one by one, so that a missing one costs only its stage."""

from spec_tracing.instrumentation._wrapping import Inline, WrapTable


class Base:
    def step(self, x):
        return x + 1


class Child(Base):  # inherits step: wrapping puts one on Child, unwrapping removes it
    pass


class Own:
    def step(self, x):
        return x * 2


def _counting(calls: list):
    def make(original):
        def step(self, x):
            calls.append(x)
            return original(self, x)

        return step

    return make


def test_inline_rows_wrap_once_and_restore_exactly():
    calls: list = []
    own_step = vars(Own)["step"]
    rows = [(Child, "step", Inline(_counting(calls))), (Own, "step", Inline(_counting(calls)))]
    first, second = WrapTable(lambda: rows), WrapTable(lambda: rows)
    first.wrap()
    second.wrap()  # already wrapped by the first: left alone, so a call is noted once
    assert (len(first), len(second)) == (2, 0)
    assert (Child().step(1), Own().step(3)) == (2, 6)
    assert calls == [1, 3]
    assert Base().step(1) == 2 and calls == [1, 3]  # the parent class is not touched
    assert Child.step.__wrapped__ is Base.step
    first.unwrap()
    assert "step" not in vars(Child)
    assert vars(Own)["step"] is own_step
    assert Child().step(5) == 6 and calls == [1, 3]


def test_an_inline_row_whose_make_declines_leaves_the_method_alone():
    own_step = vars(Own)["step"]
    table = WrapTable(lambda: [(Own, "step", Inline(lambda original: None))])
    table.wrap()
    assert len(table) == 0 and vars(Own)["step"] is own_step


def test_vllms_accounting_row_declines_a_signature_it_was_not_written_for(caplog):
    # The row passes vLLM's arguments on positionally, so it must have vLLM's exact signature:
    # against another one it would raise into vLLM's scheduler. It declines, and says so.
    from spec_tracing.instrumentation.vllm.scheduler import _make_spec_decoding_stats

    class Newer:
        def make_spec_decoding_stats(self, spec_decoding_stats, num_draft_tokens, request_id):
            return None

    class Supported:
        def make_spec_decoding_stats(
            self,
            spec_decoding_stats,
            num_draft_tokens,
            num_accepted_tokens,
            num_invalid_spec_tokens,
            request_id,
        ):
            return num_draft_tokens

    with caplog.at_level("WARNING"):
        assert _make_spec_decoding_stats(Newer.make_spec_decoding_stats) is None
    assert "num_draft_tokens, request_id" in caplog.text and "not recorded" in caplog.text
    wrapped = _make_spec_decoding_stats(Supported.make_spec_decoding_stats)
    assert wrapped(Supported(), None, 3, 1, None, request_id="r") == 3


class Stage:
    def draft(self):
        return "draft"

    def verify(self):
        return "verify"


def _noting(calls: list, label: str):
    def wrapper(wrapped, instance, args, kwargs):
        calls.append(label)
        return wrapped(*args, **kwargs)

    return wrapper


def test_a_seam_missing_in_this_version_costs_only_its_own_stage(caplog):
    from spec_tracing.instrumentation._wrapping import Seam

    here = f"{__name__}:Stage"
    calls: list = []
    rows = [
        Seam(here, "draft", _noting(calls, "draft"), "spec_draft"),
        Seam(here, "verify_renamed", _noting(calls, "verify"), "spec_verify end"),
        Seam("no_such_engine.module:Runner", "step", _noting(calls, "x"), "every stage"),
        Seam(here, "verify", _noting(calls, "verify"), "spec_verify"),
    ]
    table = WrapTable(lambda: rows, engine="Engine 9.9")
    with caplog.at_level("WARNING"):
        table.wrap()
        table.unwrap()
        table.wrap()  # the same seams missing again: not said twice
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert warnings[0].startswith("spec-tracing: Engine 9.9: seams not found")
    assert f"{__name__}.Stage.verify_renamed (spec_verify end)" in warnings[0]
    assert "no_such_engine.module.Runner.step (every stage)" in warnings[0]
    assert [seam.name for seam, _ in table.missing] == ["verify_renamed", "step"]
    stage = Stage()
    assert (stage.draft(), stage.verify()) == ("draft", "verify")
    assert calls == ["draft", "verify"]  # the seams that exist are wrapped all the same
    table.unwrap()
    assert "__wrapped__" not in dir(Stage.draft) and Stage().verify() == "verify"
    assert calls == ["draft", "verify"]


def test_a_class_known_only_at_run_time_is_wrapped_once_and_unwrapped_with_the_table():
    calls: list = []
    table = WrapTable(lambda: [])
    table.wrap()
    assert table.wrap_one(Stage, "draft", _noting(calls, "draft"))
    assert not table.wrap_one(Stage, "draft", _noting(calls, "again"))  # never stacked
    assert table.is_wrapped(Stage, "draft")
    Stage().draft()
    table.unwrap()
    Stage().draft()
    assert calls == ["draft"]
