"""The vLLM tier's engine run: a tiny Llama and BPE tokenizer built here (random weights, nothing
downloaded), served by vLLM's offline engine with n-gram speculative decoding. Run as a script
(vLLM spawns its processes, hence the main guard):

    python tests/instrumentation/vllm_app.py MODEL_DIR [TRACEPARENT]

VLLM_APP_SPEC=none runs the same prompts without speculative decoding (the greedy reference);
VLLM_APP_DYNAMIC=1 runs n-gram with vLLM's dynamic schedule (DYNAMIC) and requests of different
lengths.
It prints one line, RESULT and JSON: vLLM's own spec-decode counters, the tokens generated, and
per request its output token ids, its output length after each engine step, and vLLM's per-step
accepted/drafted counts (`per_request_spec_decode_metrics="detailed"`)."""

import json
import os
import sys

NUM_SPEC = 3
# VLLM_APP_DYNAMIC=1: (first batch size, last, draft width): 4 drafts at batch 1-2, 2 at 3-8.
DYNAMIC = [(1, 2, 4), (3, 8, 2)]
PROMPTS = [
    "the quick brown fox jumps over the lazy dog the quick brown fox",
    "speculative decoding drafts tokens and verifies them speculative decoding",
    "one two three four one two three four one two",
    "a b c a b c a b c a b",
]


def build_model(out: str) -> None:
    import torch
    from tiny_hf import llama_config  # beside this file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = [f"{p} {i}" for i in range(50) for p in PROMPTS]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(out)
    torch.manual_seed(0)
    # head_dim 64: vLLM's CPU attention has no kernel for small head sizes such as 16.
    cfg = llama_config(len(fast), 128, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)


def build_eagle_head(model_dir: str, out: str) -> None:
    """A one-layer EAGLE head for the tiny Llama, in the layout vLLM's EagleLlamaForCausalLM
    loads (fc over [embedding, hidden state], one decoder layer without its input norm; the
    target's lm_head is shared), made from the target's own first layer so that some of its
    drafts are right."""
    import json as _json

    import torch
    from safetensors.torch import load_file, save_file

    cfg = _json.load(open(os.path.join(model_dir, "config.json")))
    target = load_file(os.path.join(model_dir, "model.safetensors"))
    hidden = cfg["hidden_size"]
    weights = {
        k.removeprefix("model."): v.clone()
        for k, v in target.items()
        if k.startswith("model.layers.0.") and "input_layernorm" not in k
    }
    weights["embed_tokens.weight"] = target["model.embed_tokens.weight"].clone()
    fc = torch.zeros(hidden, 2 * hidden)
    fc[:, hidden:] = torch.eye(hidden)  # pass the target's hidden state through
    weights["fc.weight"] = fc
    save_file({k: v.contiguous() for k, v in weights.items()},
              os.path.join(out, "model.safetensors"))  # fmt: skip
    cfg.update(architectures=["EagleLlamaForCausalLM"], num_hidden_layers=1)
    with open(os.path.join(out, "config.json"), "w") as f:
        _json.dump(cfg, f)


def main() -> None:
    from vllm import LLM, SamplingParams

    model_dir = sys.argv[1]
    traceparent = sys.argv[2] if len(sys.argv) > 2 else None
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        build_model(model_dir)
    spec = os.environ.get("VLLM_APP_SPEC", "ngram")
    if spec == "eagle":
        head = os.path.join(model_dir, "eagle-head")
        if not os.path.exists(os.path.join(head, "config.json")):
            os.makedirs(head, exist_ok=True)
            build_eagle_head(model_dir, head)
        method = {"method": "eagle", "model": head, "num_speculative_tokens": NUM_SPEC}
    else:
        method = {"method": "ngram", "num_speculative_tokens": NUM_SPEC, "prompt_lookup_max": 3,
                  "prompt_lookup_min": 1}  # fmt: skip
    if os.environ.get("VLLM_APP_DYNAMIC"):  # vLLM's dynamic schedule: width by batch size
        method.update(num_speculative_tokens=4, num_speculative_tokens_per_batch_size=DYNAMIC)
    speculative = {
        "speculative_config": method,
        "per_request_spec_decode_metrics": "detailed",
    }
    llm = LLM(
        model=model_dir,
        dtype="float32",
        max_model_len=256,
        max_num_seqs=8,
        seed=0,
        enforce_eager=True,
        **(speculative if spec != "none" else {}),
        # vLLM records its spec-decode counters (and, with an OTLP endpoint, its request spans)
        # only with stats on.
        disable_log_stats=False,
        otlp_traces_endpoint=os.environ.get("VLLM_APP_OTLP_TRACES_ENDPOINT"),
    )
    engine = llm.llm_engine
    headers = {"traceparent": traceparent} if traceparent else None
    for i, prompt in enumerate(PROMPTS):
        # With the dynamic schedule the requests end one by one, so the batch shrinks 4 -> 1.
        tokens = 12 + 12 * i if os.environ.get("VLLM_APP_DYNAMIC") else 32
        params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
        engine.add_request(f"req-{i}", prompt, params, trace_headers=headers)
    generated, requests = 0, {}
    boundaries: dict = {}  # request id -> its output length after each engine step
    while engine.has_unfinished_requests():
        for out in engine.step():
            boundaries.setdefault(out.request_id, []).append(len(out.outputs[0].token_ids))
            if out.finished:
                completion = out.outputs[0]
                generated += len(completion.token_ids)
                metrics = getattr(completion, "spec_decode_metrics", None)
                requests[out.request_id] = {
                    "token_ids": list(completion.token_ids),
                    "steps": boundaries[out.request_id],
                    "accepted": list(getattr(metrics, "per_step_accepted", None) or []),
                    "drafted": list(getattr(metrics, "per_step_drafted", None) or []),
                }
    counters = {
        m.name: getattr(m, "value", None) for m in llm.get_metrics() if "spec_decode" in m.name
    }
    result = {"generated": generated, "counters": counters, "requests": requests}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
