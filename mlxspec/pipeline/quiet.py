"""A filter for a pipeline rank's standard error: MLX's ring backend writes a line for
every socket operation that fails once a rank is gone ("[ring] Socket 5 was closed by the
peer", a dozen of them), before the error mlxspec turns into one line. `connect` routes the
rank's standard error through this process, which passes every other line on as it comes.

    python -m mlxspec.pipeline.quiet    (reads the rank's stderr on stdin)
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the rank: this ends at its EOF
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = sys.stderr.buffer
    for line in sys.stdin.buffer:
        if not line.startswith(b"[ring] "):
            out.write(line)
            out.flush()


if __name__ == "__main__":
    main()
