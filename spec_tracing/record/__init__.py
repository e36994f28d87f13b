"""What runs in the engine's process: the hot path (hotpath.py), the decorators and wrappers that
call it (hooks.py), per-request trace state (request_trace.py: ReqTimeStats), and the recorder
thread that drains the hot-path buffer (recorder.py) into compact events (compactor.py).

Imports nothing from export/, metrics/ or report/: lifecycle.py wires them together.
"""
