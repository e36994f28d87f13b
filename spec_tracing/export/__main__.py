"""Entry point of the exporter process (`python -m spec_tracing.export IN_FD OUT_FD`).

Started detached: this first process forks the exporter, prints its pid and exits, so the
exporter is no descendant of the engine's process (an engine that kills its whole process tree
at shutdown, as SGLang's Engine.shutdown does, would otherwise kill it before it exported what it
holds); it still exits when the engine's end of the pipe closes."""

import os
import sys
from multiprocessing.connection import Connection

if __name__ == "__main__":
    pid = os.fork()  # this process has no threads yet: a plain fork is safe
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the engine reads one line (the pid) from stdout, then nothing

    from spec_tracing.export.child import serve

    serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
