"""Tiny random Llamas for the transformers tests (nothing is downloaded). Run as a script it does
one assisted `generate` and prints how many tokens it made (for the opentelemetry-instrument
test, which runs it in a fresh interpreter)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 96
K = 4  # draft tokens asked of the assistant per round


def llama_config(vocab_size: int, hidden_size: int, **special_tokens) -> LlamaConfig:
    """Two layers, two heads: the smallest Llama that is still a real one."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=hidden_size // 2,
        max_position_embeddings=512,
        **special_tokens,
    )


def tiny_models(seed: int = 0):
    # eos_token_id=None: random weights would otherwise stop at an arbitrary step.
    cfg = llama_config(VOCAB, 32, bos_token_id=0, pad_token_id=0, eos_token_id=None)
    torch.manual_seed(seed)
    target = LlamaForCausalLM(cfg).eval()
    draft = LlamaForCausalLM(cfg).eval()
    # The draft shares the target's weights, its head perturbed: some drafts match, some do not.
    draft.load_state_dict(target.state_dict())
    with torch.no_grad():
        head = draft.lm_head.weight
        head.add_(0.5 * head.std() * torch.randn_like(head))
    # A random draft's probabilities are tiny: with the default confidence threshold (0.4) it
    # would stop after one token.
    draft.generation_config.assistant_confidence_threshold = 0.0
    draft.generation_config.num_assistant_tokens = K
    target.config.name_or_path = "tiny-llama-target"  # as from_pretrained would set it
    return target, draft


def prompt(seed: int, length: int = 8):
    return torch.randint(1, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))


def generate(target, ids, max_new_tokens, **kwargs):
    with torch.no_grad():
        return target.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            **kwargs,
        )


if __name__ == "__main__":
    target, draft = tiny_models()
    ids = prompt(7)
    out = generate(target, ids, 16, assistant_model=draft)
    print("new", out.shape[1] - ids.shape[1])
