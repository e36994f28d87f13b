"""`python view_run.py OUT.jsonl`: a real reference-engine run for the trace-view tests, traced
to a file: 8 requests through a batch of 4 (so half of them wait in the queue), and one request
aborted mid-decode the way an engine does when its client goes away (removed from the batch,
`time_stats.abort(...)`), so the page has two outcomes to filter on."""

import sys

import spec_tracing
from spec_tracing.reference.engine import Engine, demo_prompts

spec_tracing.enable(exporter="file", file=sys.argv[1], metrics=False)
engine = Engine("eagle", batch_size=4, num_steps=3, seed=1)
for prompt in demo_prompts(8, seed=1):
    engine.add_request(prompt, 20)
for _ in range(4):
    engine.step()
gone = engine.running.pop(1)
engine.worker.release(gone)
gone.time_stats.abort("client disconnected")
engine.run()
spec_tracing.shutdown()
print(gone.rid)
