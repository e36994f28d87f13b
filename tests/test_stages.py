import pytest

from spec_tracing import RequestStage, StageConfig, register_stage, set_trace_level
from spec_tracing.stages import get_stage


def test_builtin_spec_stages_have_the_documented_names_and_levels():
    assert RequestStage.SPEC_DRAFT == StageConfig("spec_draft", 2)
    assert RequestStage.SPEC_VERIFY == StageConfig("spec_verify", 2)
    assert RequestStage.SPEC_DRAFT_EXTEND == StageConfig("spec_draft_extend", 3)
    assert RequestStage.REQUEST.level == 1


def test_register_stage_adds_a_user_stage_resolvable_by_name():
    stage = register_stage("my_tree_build", 3)
    assert get_stage("my_tree_build") is stage


def test_duplicate_stage_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="'spec_verify' is already registered"):
        register_stage("spec_verify", 2)


@pytest.mark.parametrize("level", [-1, 4, 2.5, "2", True])
def test_stage_level_outside_0_to_3_is_a_value_error_naming_it(level):
    with pytest.raises(ValueError, match=r"level .* is not allowed; use an integer 0\.\.3"):
        register_stage(f"bad_level_{level!r}", level)


def test_unknown_stage_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown stage 'nope'.*spec_draft"):
        get_stage("nope")


def test_set_trace_level_rejects_out_of_range():
    with pytest.raises(ValueError, match="set_trace_level: level 7"):
        set_trace_level(7)


def test_every_public_name_resolves_from_the_lazy_package():
    import spec_tracing

    assert sorted(spec_tracing.__all__) == sorted([*spec_tracing._MODULE_OF, "__version__"])
    for name in spec_tracing.__all__:
        value = getattr(spec_tracing, name)
        if name != "__version__":
            module = spec_tracing._MODULE_OF[name]
            assert value is getattr(getattr(spec_tracing, module), name)
    with pytest.raises(AttributeError, match="no attribute 'enabel'"):
        spec_tracing.enabel  # noqa: B018
