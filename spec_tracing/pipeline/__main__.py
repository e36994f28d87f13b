"""Entry point of the exporter process (`python -m spec_tracing.pipeline IN_FD OUT_FD [STDOUT_FD]`).

Started detached: this first process forks the exporter, prints its pid and exits, so the
exporter is no descendant of the engine's process (an engine that kills its whole process tree
at shutdown, as SGLang's Engine.shutdown does, would otherwise kill it before it exported what it
holds); it still exits when the engine's end of the pipe closes."""

import os
import signal
import sys
from multiprocessing.connection import Connection

if __name__ == "__main__":
    pid = os.fork()  # this process has no threads yet: a plain fork is safe
    if pid:
        print(pid, flush=True)
        os._exit(0)
    os.setsid()
    # A file-size limit (RLIMIT_FSIZE) makes a write fail with EFBIG, which the file exporter
    # counts, instead of killing this process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # The engine reads one line (the pid) from stdout, then nothing. From here stdout is the
    # engine's own (STDOUT_FD), so that the console exporter and SPEC_TRACING_FILE=/dev/stdout
    # print where the engine prints; /dev/null lost them while counting them exported.
    os.dup2(int(sys.argv[3]) if len(sys.argv) > 3 else os.open(os.devnull, os.O_WRONLY), 1)

    from spec_tracing.pipeline.serve import serve

    serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
