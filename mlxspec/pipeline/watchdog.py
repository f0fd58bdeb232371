"""A watchdog process for joining a pipeline: MLX's ring backend waits for every rank
forever, holding the interpreter, so a rank that never comes up would hang the others.
Started by `connect` before it joins, it ends the rank with one line unless told, by its
standard input closing, that the rank has joined in time.

    python -m mlxspec.pipeline.watchdog PID SECONDS RANK
"""

from __future__ import annotations

import os
import select
import signal
import sys


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the rank (this ends with it)
    pid, seconds, rank = int(argv[0]), float(argv[1]), argv[2]
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:  # the rank joined (or exited): stdin closed
        return
    sys.stderr.write(f"error: pipeline rank {rank} could not reach the other ranks within {seconds:g} s: is every "
                     "rank started (mlx.launch -n N ...), with the same hosts, and is the port open?\n")
    sys.stderr.flush()
    try:
        os.kill(pid, signal.SIGKILL)  # the rank is blocked inside MLX and cannot handle a gentler signal
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
