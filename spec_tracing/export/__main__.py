"""Entry point of the exporter process (`python -m spec_tracing.export IN_FD OUT_FD`)."""

import sys
from multiprocessing.connection import Connection

from spec_tracing.export.child import serve

if __name__ == "__main__":
    serve(
        Connection(int(sys.argv[1]), writable=False),
        Connection(int(sys.argv[2]), readable=False),
    )
