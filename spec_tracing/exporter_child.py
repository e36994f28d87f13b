"""Entry point of the exporter process (`python -m spec_tracing.exporter_child IN_FD OUT_FD`);
kept apart from export_process.py so that module is never run as __main__ after being imported."""

import sys
from multiprocessing.connection import Connection

from spec_tracing.export_process import serve

if __name__ == "__main__":
    serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
