"""The operating system's name of spec-tracing's long-lived threads, so that `top -H`, `ps -T`,
py-spy and perf show what each costs the engine's process (Python 3.11 names a thread for
Python only). Linux keeps 15 bytes: "spec-tracing-recorder" is shown as "spec-recorder".
Never raises: elsewhere, or without prctl, the thread keeps the name it had
(tests/test_threadname.py)."""

from __future__ import annotations

import sys
import threading

_PR_SET_NAME = 15
_libc = None


def name_this_thread() -> None:
    """Give the calling thread its Python name in the OS ("spec-tracing-" shortened to
    "spec-")."""
    global _libc
    if not sys.platform.startswith("linux"):
        return
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None)
        name = threading.current_thread().name
        short = ("spec-" + name.removeprefix("spec-tracing-")).encode()[:15]
        _libc.prctl(_PR_SET_NAME, short, 0, 0, 0)
    except Exception:  # no libc prctl here: the name is a convenience
        pass
