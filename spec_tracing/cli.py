"""`spec-tracing demo | report`."""

from __future__ import annotations

import argparse
import math
import os
import sys

from . import ledger
from .settings import ConfigError, Settings


def _demo(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print(
            "spec-tracing demo needs the reference engine: pip install 'spec-tracing[reference]'",
            file=sys.stderr,
        )
        return 2
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from tqdm import tqdm

    from . import lifecycle
    from .export.exporters import check_span_exporter
    from .metrics.instruments import acceptance_from
    from .reference.engine import Engine, demo_prompts
    from .report.summary import TraceSummary, add_records

    # The demo's embedded default is the file exporter: no collector, no network.
    overrides = {} if "SPEC_TRACING_EXPORTER" in os.environ else {"exporter": "file"}
    if args.trace_file:
        overrides.update(exporter="file", file=args.trace_file)
    if args.level is not None:
        overrides["level"] = args.level
    # A name in the trace's resource instead of unknown_service:python3.
    os.environ.setdefault("OTEL_SERVICE_NAME", "spec-tracing-demo")
    prompts = demo_prompts(args.num_requests, args.seed)
    # Everything is checked before anything is touched: a bad flag leaves the last trace as is.
    try:
        settings = Settings.from_env(**overrides)
        if settings.exporter == "file":
            check_span_exporter(settings)  # writable, opened for append: nothing truncated
        engine = Engine(
            args.worker,
            batch_size=args.batch_size,
            num_steps=args.num_steps,
            adaptive=args.adaptive,
            temperature=args.temperature,
            seed=args.seed,
        )
        for prompt in prompts:
            engine.check_request(prompt, args.max_new_tokens)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"spec-tracing demo: {_flag_names(exc, args)}", file=sys.stderr)
        return 2
    metric_reader = InMemoryMetricReader()
    try:  # a bad Prometheus address, say: one line, and the last trace left as it was
        settings = lifecycle.enable(metric_readers=[metric_reader], **overrides)
    except ConfigError as exc:
        print(f"spec-tracing demo: {_flag_names(exc, args)}", file=sys.stderr)
        return 2
    if settings.exporter == "file" and os.path.isfile(settings.file):
        # The file holds this run only: emptied now that tracing is on and nothing has been
        # written yet (truncated in place, as the exporter holds it open for append).
        with open(settings.file, "r+b") as f:
            f.truncate(0)
    summary = TraceSummary()
    lifecycle.add_record_listener(lambda records: add_records(summary, records))

    for prompt in prompts:
        engine.add_request(prompt, args.max_new_tokens)
    with tqdm(
        total=args.num_requests,
        desc=f"{args.worker}, batch {args.batch_size}",
        unit="req",
        file=sys.stderr,
        disable=args.quiet,
    ) as bar:
        try:
            engine.run(progress=bar.update)
        except KeyboardInterrupt:  # Ctrl-C: keep what ran (the open requests end unfinished)
            interrupted = True
        else:
            interrupted = False
    lifecycle.flush()
    # Acceptance comes from the metrics, the same counters Prometheus and OTLP receive.
    summary.acceptance = acceptance_from(metric_reader.get_metrics_data())
    lifecycle.shutdown()
    counts = lifecycle.last_stats()

    stats = engine.stats
    print(summary.render(level=settings.level))
    print(f"decode steps      {stats.decode_steps} (batches)")
    if interrupted:
        print("tokens/s          n/a (interrupted: Ctrl-C)")
    else:
        print(
            f"tokens/s          {stats.generated_tokens / stats.elapsed_s:,.0f}"
            f"  ({stats.generated_tokens} tokens in {stats.elapsed_s:.1f} s)"
        )
    print(f"trace             {_where(settings)}")
    lost = ledger.not_exported(counts)
    verb = {"none": "discarded", "console": "printed"}.get(settings.exporter, "exported")
    print(f"spans {verb:<11} {counts['spans']:,}" + (f"  (not exported: {lost})" if lost else ""))
    if settings.step_sample_ratio < 1:
        kept, dropped = counts["steps_kept_requests"], counts["steps_dropped_requests"]
        print(f"step sampling     {counts['sampled_out_spans']:,} step spans left out; "
              f"steps kept for {kept} of {kept + dropped} requests")  # fmt: skip
    return 130 if interrupted else 0


_FLAGS = {"file": "--trace-file", "SPEC_TRACING_FILE": "--trace-file", "level": "--level"}


def _flag_names(exc: Exception, args: argparse.Namespace) -> str:
    """The error in the user's terms: a flag they gave is named as that flag."""
    variable = getattr(exc, "variable", None)
    flag = _FLAGS.get(variable)
    given = {"--trace-file": args.trace_file, "--level": args.level}
    if flag and given.get(flag) is not None:
        return f"{flag} {exc.value!r} is not allowed; expected {exc.allowed}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _where(settings) -> str:
    if settings.exporter == "file":
        return f"{os.path.abspath(settings.file)} (OTLP JSON; spec-tracing report FILE)"
    if settings.exporter == "otlp":
        endpoint = settings.otel.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or settings.otel.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317 (default)"
        )
        protocol = settings.otel.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        return f"OTLP {protocol} to {endpoint}"
    return settings.exporter


def _report(args: argparse.Namespace) -> int:
    import logging

    from .report.html import render_html
    from .report.jaeger import jaeger_chunks
    from .report.otlp_json import read_spans
    from .report.perfetto import trace_event_chunks
    from .report.summary import TraceSummary, render_requests
    from .stages import RequestStage

    logging.basicConfig(format="spec-tracing report: %(message)s")  # the truncated-line warning
    files = args.file
    if len(files) > 2 or (len(files) == 2 and (args.jaeger_json or args.perfetto
                                               or args.requests or not args.html)):  # fmt: skip
        print("spec-tracing report: two files compare two runs, with --html OUT.html and no "
              f"other output; got {len(files)} files", file=sys.stderr)  # fmt: skip
        return 2
    if len(files) == 2:
        return _compare(args, files)
    args.file = files[0]
    problem = _check_outputs(args)
    if problem:  # before the (possibly long) parse
        print(f"spec-tracing report: {problem}", file=sys.stderr)
        return 2

    def work():
        spans = read_spans(args.file)
        text = TraceSummary.from_spans(spans).render()
        roots = [s for s in spans if s.name == RequestStage.REQUEST.name]
        listing = render_requests(roots, spans) if args.requests else None
        outputs = []
        if args.html:
            name = os.path.basename(args.file)
            outputs.append((args.html, render_html(spans, text, name, args.select)))
        # Written a trace or a request at a time, after the page (their JSON would be
        # several times the spans' own memory).
        if args.jaeger_json:
            outputs.append((args.jaeger_json, lambda: jaeger_chunks(spans)))
        if args.perfetto:
            outputs.append((args.perfetto, lambda: trace_event_chunks(spans)))
        return text, listing, outputs

    done = _guarded("report", args.file, work)
    if done is None:
        return 2
    text, listing, outputs = done
    print(text)
    if listing is not None:
        print()
        print(listing)
    written = _guarded("report", args.file, lambda: _write_all("report", outputs))
    return 2 if written is None else written


_BAD_VALUE = (ValueError, TypeError, OverflowError, KeyError, AttributeError, RecursionError)


def _guarded(command: str, file: str, work):
    """work()'s result; None after one error line for a file that cannot be read or holds a
    value of the wrong type or range (the caller exits 2)."""
    from .report.otlp_json import TraceFileError

    try:
        return work()
    except TraceFileError as exc:
        print(f"spec-tracing {command}: {exc}", file=sys.stderr)
    except _BAD_VALUE as exc:  # a value of the wrong type or out of range in a valid line
        print(f"spec-tracing {command}: {file}: a value {command} cannot use "
              f"({type(exc).__name__}: {exc!s:.160})", file=sys.stderr)  # fmt: skip
    return None


def _write_all(command: str, outputs: list[tuple[str, object]]) -> int:
    """Write each (path, text or a function returning chunks of text); 2 after one error line
    for a path that cannot be written."""
    for path, content in outputs:
        try:
            _replace(path, content)
        except OSError as exc:
            print(f"spec-tracing {command}: cannot write {path} ({exc.strerror})", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    return 0


def _replace(path: str, content) -> None:
    """Write `path` as a new file (a temporary one beside it, then renamed over it): a write
    that fails leaves what was there, and a hard link to the input is not written through."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8") as f:
            if isinstance(content, str):
                f.write(content)
            else:
                f.writelines(content())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _select(text: str) -> tuple:
    from .report.html import parse_select

    try:
        return parse_select(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--select ")) from None


def _compare(args: argparse.Namespace, files: list[str]) -> int:
    from .report.compare import render_compare
    from .report.otlp_json import read_spans
    from .report.summary import TraceSummary

    for file in files:
        args.file = file
        problem = _check_outputs(args)
        if problem:
            print(f"spec-tracing report: {problem}", file=sys.stderr)
            return 2

    def work():
        runs = [read_spans(f) for f in files]
        texts = [TraceSummary.from_spans(spans).render() for spans in runs]
        return texts, render_compare(*runs, *(os.path.basename(f) for f in files))

    done = _guarded("report", " and ".join(files), work)
    if done is None:
        return 2
    texts, page = done
    for label, file, text in zip("AB", files, texts, strict=True):
        print(f"{label}: {file}\n{text}\n")
    return _write_all("report", [(args.html, page)])


def _tune(args: argparse.Namespace) -> int:
    import json

    from .report.otlp_json import read_spans
    from .report.tune import render, tune

    if args.json and os.path.abspath(args.json) == os.path.abspath(args.file):
        print(f"spec-tracing tune: --json {args.json} is the input file", file=sys.stderr)
        return 2
    result = _guarded("tune", args.file, lambda: tune(read_spans(args.file)))
    if result is None:
        return 2
    print(render(result))
    return _write_all("tune", [(args.json, json.dumps(result, indent=1))] if args.json else [])


def _check_outputs(args: argparse.Namespace) -> str | None:
    """What is wrong with the output paths, if anything: one over the input, two the same, or
    one that cannot be written (a directory, a missing folder)."""
    given = [
        (flag, path)
        for flag, path in (
            ("--html", args.html),
            ("--jaeger-json", args.jaeger_json),
            ("--perfetto", args.perfetto),
        )
        if path
    ]
    seen: dict = {}
    for flag, path in given:
        real = os.path.realpath(path)
        if real == os.path.realpath(args.file):
            return f"{flag} {path!r} is the input file; name another output"
        if real in seen:
            return f"{flag} and {seen[real]} both name {path!r}; give each its own file"
        seen[real] = flag
        if os.path.isdir(path):
            return f"{flag} {path!r} is a directory; name a file"
        folder = os.path.dirname(os.path.abspath(path))
        if not os.access(folder, os.W_OK):
            return f"{flag} {path!r}: cannot write in {folder}"
    return None  # fmt: skip


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; use an integer >= 1")
    return value


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; use 0 (greedy) or a positive finite number"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: `--htm` is an error, not --html.
    parser = argparse.ArgumentParser(prog="spec-tracing", description=__doc__, allow_abbrev=False)
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"spec-tracing {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo",
        help="run the reference engine with tracing on",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    demo.add_argument(
        "--worker",
        choices=["eagle", "ngram", "multi-layer"],
        default="eagle",
        help="the draft proposer",
    )
    demo.add_argument(
        "--adaptive",
        nargs="?",
        const=True,
        default=None,
        metavar="CONFIG",
        help="adapt the draft width by batch size (built-in config, or a JSON "
        "file / string keyed by batch-size lower bounds)",
    )
    demo.add_argument("--batch-size", type=_positive, default=16, help="requests decoded together")
    demo.add_argument("--num-requests", type=_positive, default=64, help="built-in prompts run")
    demo.add_argument(
        "--max-new-tokens",
        type=_positive,
        default=96,
        help="tokens generated per request (prompt + these + draft width must fit the model's "
        "384 positions)",
    )
    demo.add_argument("--num-steps", type=_positive, default=3, help="draft width (chain length)")
    demo.add_argument(
        "--temperature",
        type=_temperature,
        default=0.0,
        help="0 greedy; >0 sampling with rejection-sampling verification",
    )
    demo.add_argument("--seed", type=int, default=0, help="prompts, weights and sampling")
    demo.add_argument(
        "--level",
        type=int,
        choices=[0, 1, 2, 3],
        default=None,
        help="trace level (default SPEC_TRACING_LEVEL, else 3): 1 request spans, "
        "2 + draft/verify, 3 + draft_extend",
    )
    demo.add_argument(
        "--trace-file",
        default=None,
        help="write the trace here (file exporter; default SPEC_TRACING_FILE or "
        "spec-traces.jsonl); the file is replaced",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    report = sub.add_parser("report", help="summarize an OTLP JSON trace file", allow_abbrev=False)
    report.add_argument(
        "file",
        nargs="+",
        help="OTLP JSON lines (ours or the Collector file exporter's); two files with --html: "
        "the two runs side by side (acceptance, per position, widths, latency)",
    )
    report.add_argument("--requests", action="store_true", help="also one line per request")
    report.add_argument(
        "--html",
        metavar="OUT.html",
        help="write a self-contained page: waterfall per request, "
        "acceptance over time (no network needed to view it)",
    )
    report.add_argument(
        "--select",
        type=_select,
        default=("first", 500),
        metavar="HOW",
        help="which requests the --html page carries: first:N | slowest:N | lowest_accept:N | "
        "window:START-END (seconds from the trace's start) | ids:A,B | all; traces whose root "
        "is not in the file are chosen the same way (default: first:500)",
    )
    report.add_argument(
        "--jaeger-json",
        metavar="OUT.json",
        help="write the traces as JSON that Jaeger's UI accepts for upload (Search > JSON File)",
    )
    report.add_argument(
        "--perfetto",
        metavar="OUT.json",
        help="write Chrome trace-event JSON for ui.perfetto.dev or chrome://tracing: a track per "
        "request, counters for batch size, draft width and accept rate",
    )
    report.set_defaults(run=_report)
    tune = sub.add_parser(
        "tune",
        help="which fixed draft width would have served a trace best, per batch-size bucket",
        description="From a trace's verify rounds and stage spans: per batch-size bucket, the "
        "estimated accept length and step time of each draft width up to the widest that ran, "
        "the predicted tokens/s, the best fixed width, and the tokens/s observed.",
        allow_abbrev=False,
    )
    tune.add_argument("file", help="OTLP JSON lines (ours or the Collector file exporter's)")
    tune.add_argument("--json", metavar="OUT.json", help="also write the result as JSON")
    tune.set_defaults(run=_tune)
    doctor = sub.add_parser(
        "doctor",
        help="list the installed engines, their versions and every seam spec-tracing wraps in "
        "them (found or missing); starts no engine",
    )
    doctor.set_defaults(run=_doctor)
    return parser


def _doctor(args) -> int:
    from .doctor import main as doctor_main

    return doctor_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `spec-tracing`: what it can do, not an error
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except ConfigError as exc:  # one the SDK's import would raise (lifecycle.py checks first)
        print(f"spec-tracing {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in report or doctor (demo handles its own): no traceback
        print(f"spec-tracing {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `spec-tracing doctor | head`: the reader left; no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
