"""TEST-ONLY: run sglang.Engine on this CPU with n-gram speculative decoding (or none) on a tiny
Llama built in code, print RESULT and JSON (texts, token ids, meta_info).

    python run_engine.py MODEL_DIR none|ngram|standalone|eagle

standalone: SGLang's STANDALONE algorithm (the EAGLE v2 worker with an ordinary model as the
draft: here the target itself); eagle: SGLang's EAGLE algorithm with the tiny head of
eagle_head.py (built beside MODEL_DIR, as MODEL_DIR-eagle-head). Both draft a chain (topk 1) of
RUN_ENGINE_DRAFT_STEPS tokens per round (default 1).
"""

import inspect
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STANDINS = os.path.join(HERE, "standins")
sys.path[:0] = [STANDINS, os.path.join(HERE, "..", "instrumentation")]
# Spawned scheduler processes: the stand-ins and the attention patch (sitecustomize) there too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (STANDINS, os.environ.get("PYTHONPATH")) if p)

PROMPTS = [
    "the quick brown fox jumps over the lazy dog the quick brown fox",
    "one two three four one two three four one two",
]


def main() -> None:
    model_dir, mode = sys.argv[1], sys.argv[2]
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        from vllm_app import build_model

        build_model(model_dir)
    eagle_dir = model_dir.rstrip("/") + "-eagle-head"
    if mode == "eagle" and not os.path.exists(os.path.join(eagle_dir, "config.json")):
        from eagle_head import build

        build(model_dir, eagle_dir, PROMPTS)
    import sglang

    steps = int(os.environ.get("RUN_ENGINE_DRAFT_STEPS", "1"))
    chain = {"speculative_num_steps": steps, "speculative_eagle_topk": 1,
             "speculative_num_draft_tokens": steps + 1}  # fmt: skip

    spec = {
        "none": {},
        "ngram": {"speculative_algorithm": "NGRAM", "speculative_num_draft_tokens": 4},
        "standalone": {"speculative_algorithm": "STANDALONE",
                       "speculative_draft_model_path": model_dir, **chain},
        "eagle": {"speculative_algorithm": "EAGLE", "speculative_draft_model_path": eagle_dir,
                  **chain},
    }[mode]  # fmt: skip
    endpoint = os.environ.get("RUN_ENGINE_SGLANG_TRACE_ENDPOINT")  # SGLang's own tracing
    if endpoint:
        spec.update(enable_trace=True, otlp_traces_endpoint=endpoint)
    engine = sglang.Engine(
        model_path=model_dir,
        device="cpu",
        attention_backend="torch_native",
        # SGLang's default is the overlap scheduler; RUN_ENGINE_OVERLAP=1 runs it.
        disable_overlap_schedule=os.environ.get("RUN_ENGINE_OVERLAP") != "1",
        dtype="float32",
        mem_fraction_static=0.3,
        max_total_tokens=4096,
        disable_cuda_graph=True,
        skip_server_warmup=True,
        log_level="error",
        **spec,
    )
    try:
        outs = engine.generate(
            PROMPTS, {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}
        )
        # Engine.shutdown() kills the scheduler's whole process tree, here straight after the
        # last response, as scripts do (SGLang's own spans, through its BatchSpanProcessor,
        # need seconds: with its tracing on, the shutdown waits 3 s).
        time.sleep(float(os.environ.get("RUN_ENGINE_SHUTDOWN_DELAY", 3 if endpoint else 0)))
    finally:
        engine.shutdown()
    # Whether spec-tracing's plugin wrapped Engine.shutdown in this (the user's) process.
    wrapped = type(inspect.getattr_static(type(engine), "shutdown")).__name__ == "FunctionWrapper"
    print("RESULT " + json.dumps([
        {"prompt": p, "text": o["text"], "ids": o["output_ids"], "meta": o["meta_info"],
         "shutdown_wrapped": wrapped} for p, o in zip(PROMPTS, outs, strict=True)
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
