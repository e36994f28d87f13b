"""`python -m benchmarks [--quick] [--json PATH]`: the hot path off and on, the engine traced
and untraced, export capacity, each a ratio against a baseline measured in the same run (medians
of repeats), and the memory bound under a collector outage, as a table and as JSON
(docs/benchmarks.md says how each is measured)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import machine
from .engine import bench_engine
from .export import bench_export
from .hotpath import bench_disabled, bench_enabled, bench_sglang, bench_vllm_round
from .memory import bench_memory


def _table(results: dict) -> str:
    d, e, g, x = (results[k] for k in ("disabled", "enabled", "engine", "export"))
    lines = [
        f"machine: {results['machine']['cores']} cores, Python {results['machine']['python']}",
        "",
        f"{'benchmark':<58}{'figure':>14}  goal",
        f"{'1. disabled: decorated hook / bare call':<58}{d['decorated_hook_ratio']:>13.2f}x"
        "  <= 1.2x",
        f"{'1. disabled: set_time_batch / bare call':<58}{d['set_time_batch_ratio']:>13.2f}x"
        "  <= 1.2x",
    ]
    for n in (1, 16, 64, 256):
        row = e[n]
        label = (
            f"2. enabled step, batch {n}: ours {row['ours_us']:.1f} us vs SGLang-like "
            f"{row['baseline_us']:.0f} us"
        )
        lines.append(
            f"{label:<58}{row['ours_over_baseline']:>13.5f}x"
            + ("  <= 0.002x (1/500)" if n == 256 else "")
        )
    lines.append(
        f"{'2. enabled: ours batch 256 / batch 1':<58}{e['batch256_over_batch1']:>13.2f}x  <= 2x"
    )
    sg = results["sglang"]
    for n in (1, 64, 256):
        q1, q3 = sg[n]["us_quartiles"]
        label = f"2. SGLang wrappers per decode step, batch {n}"
        lines.append(f"{label:<58}{sg[n]['us']:>11.1f} us  (quartiles {q1:.1f}-{q3:.1f})")
    v = results["vllm_round"]
    q1, q3 = v["ns_quartiles"]
    label = "2. vLLM make_spec_decoding_stats wrapper, per request"
    lines.append(f"{label:<58}{v['ns_per_request']:>11.0f} ns  (quartiles {q1:.0f}-{q3:.0f})")
    label = (
        f"3. engine batch 64 tokens/s on/off ({g['tokens_per_s_on']:,.0f} / "
        f"{g['tokens_per_s_off']:,.0f})"
    )
    q1, q3 = g["on_over_off_quartiles"]
    lines.append(
        f"{label:<58}{g['on_over_off']:>13.3f}x  >= 0.99x, q1 >= 0.975 "
        f"(quartiles {q1:.3f}-{q3:.3f})"
    )
    label = "3. engine process CPU per token, off/on"
    q1, q3 = g["process_cpu_off_over_on_quartiles"]
    figure = g["process_cpu_off_over_on"]
    lines.append(f"{label:<58}{figure:>13.3f}x  (quartiles {q1:.3f}-{q3:.3f})")
    for rate, row in x.items():
        if rate == "goal":
            continue
        label = f"4. export at {rate:,} spans/s offered: delivered/s (dropped)"
        lines.append(
            f"{label:<58}{row['delivered_per_s']:>14,.0f}  ({row['dropped_spans']} "
            f"dropped, {row['lost_spans']} lost; last span {row['tail_s']:.2f} s after the last "
            f"offered; {row['spans_per_exporter_cpu_s']:,.0f} spans per exporter CPU-second)"
        )
    lines.append(f"{'':<58}{'':>14}  >= 300,000/s, none dropped")
    m = results["memory"]
    down, up = m["collector_down"], m["collector_up"]
    label = (
        f"5. collector down, {down['offered_spans']:,} spans: exporter RSS "
        f"{down['exporter_rss_peak_mb']:.0f} MB (up: {up['exporter_rss_peak_mb']:.0f})"
    )
    lines.append(f"{label:<58}{down['exporter_rss_last_over_half']:>13.3f}x  flat once full")
    label = "5. collector down: exporter memory per buffered span"
    lines.append(f"{label:<58}{m['bytes_per_buffered_span']:>12.0f} B  <= 100 B")
    label = f"5. collector down: engine RSS growth ({down['export_dropped_spans']:,} dropped)"
    lines.append(f"{label:<58}{down['engine_rss_growth_mb']:>11.1f} MB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="about a minute")
    parser.add_argument("--json", default="benchmarks/results/latest.json")
    args = parser.parse_args()
    start = time.time()
    results = {"machine": machine(), "quick": args.quick}
    results["disabled"] = bench_disabled(args.quick)
    results["enabled"] = bench_enabled(args.quick)
    results["sglang"] = bench_sglang(args.quick)
    results["vllm_round"] = bench_vllm_round(args.quick)
    results["engine"] = bench_engine(args.quick)
    results["export"] = bench_export(args.quick)
    results["memory"] = bench_memory(args.quick)
    results["seconds"] = time.time() - start
    print(_table(results))
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{results['seconds']:.0f} s; JSON: {path}")


if __name__ == "__main__":
    main()
