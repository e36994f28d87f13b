"""The adaptive draft-width controller: slot choice, step-up/step-down decisions, config errors."""

import json

import pytest

import spec_tracing
from spec_tracing.reference.adaptive import AdaptiveController, parse_config

CONFIG = {
    "1": {
        "candidate_steps": [1, 3, 7],
        "up_hysteresis": 0.0,
        "down_hysteresis": -0.25,
        "ceiling_coeff": 0,
        "warmup": 2,
        "update_interval": 1,
        "ema_alpha": 1.0,
    },
    "8": {"candidate_steps": [1, 2], "warmup": 0, "update_interval": 1, "ema_alpha": 1.0},
    "32": {"candidate_steps": [1], "warmup": 0},
}


def test_slot_is_the_largest_key_not_above_the_batch_size():
    c = AdaptiveController(CONFIG)
    assert [c.slot_for(n).min_batch for n in (1, 7, 8, 31, 32, 500)] == [1, 1, 8, 8, 32, 32]


def test_steps_up_when_the_last_draft_position_is_usually_accepted():
    c = AdaptiveController(CONFIG)
    changes = []
    c.on_change = lambda slot, old, new: changes.append((old, new))
    assert c.steps_for(1) == 1
    c.observe(1, [1])  # warm-up: no decision
    c.observe(1, [1])
    assert c.steps_for(1) == 1
    c.observe(1, [1])  # ema 1.0 >= 1 - 1 + 0.0 -> up to 3
    assert c.steps_for(1) == 3
    c.observe(1, [2])  # ema 2.0 >= 3 - 1 -> up to 7
    assert c.steps_for(1) == 7
    assert changes == [(1, 3), (3, 7)]


def test_steps_down_when_the_smaller_width_would_have_held_the_accepted_drafts():
    c = AdaptiveController(CONFIG)
    slot = c.slot_for(1)
    slot.index, slot.rounds = 2, 5  # at 7, warm-up over
    c.observe(1, [5])  # ema 5: not <= 3 - 0.25, not >= 6 -> stays
    assert c.steps_for(1) == 7
    c.observe(1, [2, 3])  # ema 2.5 <= 2.75 -> down to 3
    assert c.steps_for(1) == 3
    c.observe(1, [0, 0, 1])  # ema 0.33 <= 1 - 0.25 -> down to 1
    assert c.steps_for(1) == 1


def test_each_slot_learns_on_its_own():
    c = AdaptiveController(CONFIG)
    c.observe(8, [1])  # slot 8: ema 1 >= 1 - 1 -> up to 2
    assert c.steps_for(8) == 2
    assert c.steps_for(1) == 1 and c.slot_for(1).rounds == 0


def test_ceiling_caps_the_width():
    c = AdaptiveController(
        {
            "1": {
                "candidate_steps": [1, 3, 7],
                "ceiling_coeff": 1.0,
                "warmup": 0,
                "update_interval": 1,
                "ema_alpha": 1.0,
            }
        }
    )
    slot = c.slot_for(1)
    slot.index = 1
    c.observe(1, [2])  # would step up to 7, but ceil(1.0 * (2 + 1)) = 3
    assert c.steps_for(1) == 3


def test_a_config_file_is_read(tmp_path):
    path = tmp_path / "adaptive.json"
    path.write_text(json.dumps(CONFIG))
    assert [s.min_batch for s in parse_config(str(path))] == [1, 8, 32]


@pytest.mark.parametrize(
    "config,match",
    [
        ({"one": {"candidate_steps": [1]}}, r"slot 'one', field '<key>'"),
        ({"1": {"candidate_steps": []}}, r"slot '1', field 'candidate_steps'"),
        ({"1": {"candidate_steps": [2, 0]}}, r"slot '1', field 'candidate_steps'"),
        ({"1": {"candidate_steps": [1], "speed": 2}}, r"slot '1', field 'speed'"),
        ({"4": {"candidate_steps": [1], "ema_alpha": 0}}, r"slot '4', field 'ema_alpha'"),
        ({"4": {"candidate_steps": [1], "warmup": -1}}, r"slot '4', field 'warmup'"),
        ({"4": {"up_hysteresis": "high"}}, r"slot '4', field 'up_hysteresis'"),
        ({}, "non-empty object"),
        ("{not json", "not JSON"),
        ("/nonexistent/adaptive.json", "cannot be read"),
    ],
)
def test_bad_config_is_a_value_error_naming_slot_and_field(config, match):
    with pytest.raises(ValueError, match=match):
        parse_config(config)


def test_every_width_change_is_a_spec_adapt_span_with_its_inputs(spec_spans):
    """The reference engine's controller: each decision it makes is one spec_adapt span per
    request of the batch it was decided from, carrying old and new width, slot, the EMA before
    and after and the candidates; the steps that follow in that slot run at the new width."""
    from spec_tracing.reference.engine import Engine, demo_prompts
    from spec_tracing.semconv import SpanAttr

    engine = Engine("eagle", batch_size=8, adaptive=True, seed=2)
    for prompt in demo_prompts(16, seed=2):
        engine.add_request(prompt, 40)
    engine.run()
    spec_tracing.flush()
    decisions = [h for slot in engine.controller.slots for h in slot.history]
    adapt = spec_spans.spans("spec_adapt")
    assert decisions and adapt
    by_time = {}
    for span in adapt:
        by_time.setdefault(span.start_time, []).append(span)
    assert len(by_time) == len(decisions)
    made = sorted((old, new) for _, old, new in decisions)
    seen = []
    for spans in by_time.values():
        a = spans[0].attributes
        assert len(spans) == a[SpanAttr.BATCH_SIZE]  # one per request of the batch
        assert a[SpanAttr.ADAPT_OLD_WIDTH] != a[SpanAttr.ADAPT_NEW_WIDTH]
        assert {a[SpanAttr.ADAPT_OLD_WIDTH], a[SpanAttr.ADAPT_NEW_WIDTH]} <= set(
            a[SpanAttr.ADAPT_CANDIDATES]
        )
        slot = engine.controller.slot_for(a[SpanAttr.BATCH_SIZE])
        assert a[SpanAttr.ADAPT_SLOT] == slot.min_batch
        assert spans[0].end_time == spans[0].start_time
        seen.append((a[SpanAttr.ADAPT_OLD_WIDTH], a[SpanAttr.ADAPT_NEW_WIDTH]))
    assert sorted(seen) == made
