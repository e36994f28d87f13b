"""The reference engine: lossless speculative decoding, realistic acceptance, rejection sampling."""

import pytest
import torch

from spec_tracing.reference.build import build_models
from spec_tracing.reference.engine import Engine, demo_prompts, greedy_reference
from spec_tracing.reference.workers import DraftOutput, EagleWorker

PROMPTS = demo_prompts(10, seed=3)
NEW = 32


@pytest.fixture(scope="module")
def references():
    return [greedy_reference(p, NEW) for p in PROMPTS]


@pytest.mark.parametrize("worker", ["eagle", "ngram", "multi-layer"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_speculative_output_equals_target_only_greedy(references, worker, batch_size):
    engine = Engine(worker, batch_size=batch_size, num_steps=3)
    reqs = [engine.add_request(p, NEW) for p in PROMPTS]
    engine.run()
    for req, ref in zip(reqs, references, strict=True):
        assert req.output == ref, f"{worker} x{batch_size} diverged on {req.rid}"


def test_adaptive_widths_stay_lossless(references):
    engine = Engine(
        "eagle",
        batch_size=4,
        adaptive={"1": {"candidate_steps": [1, 2, 4], "warmup": 1, "update_interval": 1}},
    )
    reqs = [engine.add_request(p, NEW) for p in PROMPTS]
    engine.run()
    assert [r.output for r in reqs] == references
    assert len(set(engine.stats.widths)) > 1  # the width did change during the run


def test_eagle_acceptance_is_realistic():
    engine = Engine("eagle", batch_size=8, num_steps=3)
    reqs = [engine.add_request(p, 64) for p in demo_prompts(16)]
    engine.run()
    accepted = sum(a for r in reqs for _, _, a in r.steps)
    proposed = sum(p for r in reqs for _, p, _ in r.steps)
    assert 0.3 < accepted / proposed < 0.95


def test_continuous_batching_admits_requests_as_others_leave():
    engine = Engine("ngram", batch_size=3)
    short = [engine.add_request(p, 2) for p in PROMPTS[:3]]
    longer = [engine.add_request(p, 12) for p in PROMPTS[3:6]]
    engine.step()
    assert {r.rid for r in engine.running} <= {r.rid for r in short}
    engine.run()
    assert all(r.done for r in short + longer)
    assert len(engine.finished) == 6


def test_engine_handles_a_batch_of_256():
    engine = Engine("eagle", batch_size=256, num_steps=2)
    reqs = [engine.add_request(p, 3) for p in demo_prompts(256)]
    engine.step()
    assert len(engine.running) + len(engine.finished) == 256
    engine.run()
    assert all(len(r.output) == 3 for r in reqs)


def test_bad_requests_get_clear_errors():
    engine = Engine("eagle")
    with pytest.raises(ValueError, match="prompt .* is not allowed"):
        engine.add_request([500], 4)
    with pytest.raises(ValueError, match="max_new_tokens 1000 is not allowed"):
        engine.add_request([1, 2], 1000)
    with pytest.raises(ValueError, match="worker 'medusa' is not allowed"):
        Engine("medusa")


def test_rejection_sampling_reproduces_the_target_distribution():
    """The first emitted token of a verify round is distributed as the target's p, whatever the
    draft's q (speculative sampling's guarantee)."""
    worker = EagleWorker(build_models(0), num_steps=1, slots=1, temperature=1.0, seed=0)
    p_logits = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    q = torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    n = 20000
    drafts = torch.multinomial(q, n, replacement=True, generator=torch.Generator().manual_seed(1))
    logits = p_logits.expand(n, 2, 3)  # position 0 scores the draft, 1 gives the bonus
    draft = DraftOutput(drafts[:, None], [1] * n, q.expand(n, 1, 3))
    accepted, bonus = worker._rejection_sample(logits, draft)
    first = torch.where(torch.tensor(accepted) == 1, drafts, torch.tensor(bonus))
    freq = torch.bincount(first, minlength=3).double() / n
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.015)


def test_sampling_mode_runs_every_worker_to_completion():
    for worker in ("eagle", "ngram", "multi-layer"):
        engine = Engine(worker, batch_size=4, temperature=0.8, seed=1)
        reqs = [engine.add_request(p, 16) for p in PROMPTS[:4]]
        engine.run()
        assert all(len(r.output) == 16 for r in reqs)
        assert all(0 <= a <= p for r in reqs for _, p, a in r.steps)
