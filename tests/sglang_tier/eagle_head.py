"""TEST-ONLY: a tiny EAGLE draft head (SGLang's LlamaForCausalLMEagle) for the tiny target Llama,
built in code. SGLang gives an EAGLE head the target's embedding and lm_head and feeds it
fc([embedding of the last token; target hidden state]) through one decoder layer, no final norm.
This head is a bigram guesser by construction: fc reads the embedding only (the hidden-state half
is zero) and the layer adds nothing (o_proj and down_proj zero), so its draft after token x is
argmax(lm_head(A @ embed(x))), with A fitted to the target's own greedy continuations of the
prompts. Right often, not always: `guess(x)` gives the test the draft it must have made."""

from __future__ import annotations

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file


def _target(target_dir):
    """The target's weights, its embedding and its lm_head."""
    w = load_file(os.path.join(target_dir, "model.safetensors"))
    return w, w["model.embed_tokens.weight"], w["lm_head.weight"]


def build(target_dir: str, out: str, prompts: list[str], new_tokens: int = 24) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(target_dir)
    model = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()
    pairs: dict[int, list[int]] = {}
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            seq = model.generate(ids, max_new_tokens=new_tokens, do_sample=False)[0].tolist()
        for x, y in zip(seq[ids.shape[1] - 1 : -1], seq[ids.shape[1] :], strict=True):
            pairs.setdefault(x, []).append(y)
    # The most frequent follower of each token in the target's own output.
    xs = list(pairs)
    ys = [max(set(v), key=v.count) for v in pairs.values()]
    w, embed, head = _target(target_dir)
    hidden = embed.shape[1]
    torch.manual_seed(0)
    a = torch.zeros(hidden, hidden, requires_grad=True)
    opt = torch.optim.Adam([a], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(embed[xs] @ a.T @ head.T, torch.tensor(ys))
        loss.backward()
        opt.step()
    os.makedirs(out, exist_ok=True)
    cfg = json.load(open(os.path.join(target_dir, "config.json")))
    cfg.update(architectures=["LlamaForCausalLMEagle"], num_hidden_layers=1)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in os.listdir(target_dir):
        if name.startswith("tokenizer") or name == "special_tokens_map.json":
            shutil.copy(os.path.join(target_dir, name), out)
    layer = {k.removeprefix("model.layers.0."): v for k, v in w.items()
             if k.startswith("model.layers.0.") and "input_layernorm" not in k}  # fmt: skip
    layer["self_attn.o_proj.weight"] = torch.zeros_like(layer["self_attn.o_proj.weight"])
    layer["mlp.down_proj.weight"] = torch.zeros_like(layer["mlp.down_proj.weight"])
    tensors = {f"layers.0.{k}": v for k, v in layer.items()}
    tensors["fc.weight"] = torch.cat([a.detach(), torch.zeros(hidden, hidden)], dim=1)
    tensors["fc.bias"] = torch.zeros(hidden)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "model.safetensors")
    )


def guesser(target_dir: str, head_dir: str):
    """The head's draft after token x, computed from its weights as SGLang runs it."""
    _, embed, head = _target(target_dir)
    fc = load_file(os.path.join(head_dir, "model.safetensors"))["fc.weight"]
    a = fc[:, : embed.shape[1]]
    return lambda x: int((head @ (a @ embed[x])).argmax())
