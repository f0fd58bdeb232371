"""One rank of a pipeline, for the tests (run under `mlx.launch`, or with MLX_RANK and
MLX_HOSTFILE set by hand): every rank loads its blocks; rank 0 decodes greedily (with a
draft, speculatively with a fixed k) from token ids; every rank prints one JSON line with
what it holds in memory (and rank 0 the tokens).

    python pipeline_rank.py MODEL [--draft D] [--tokens N] [--pid-dir DIR] [--alone]

`--alone`: the same in one process, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import mlx.core as mx

from mlxspec import stream_generate
from mlxspec.errors import MlxspecError
from mlxspec.load import load_model
from mlxspec.pipeline import close, connect, pipeline_errors
from mlxspec.pipeline.link import Link, serve
from mlxspec.pipeline.stages import check_agreement, load_stage


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--draft", type=Path)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--pid-dir", type=Path)
    parser.add_argument("--alone", action="store_true")
    options = parser.parse_args()
    if options.alone:
        model = load_model(options.model, dtype=mx.float32)
        report = {"rank": None, "weights": mx.get_active_memory()}
        steps = list(stream_generate(model, None, list(range(5, 17)), max_tokens=options.tokens))
        print(json.dumps({**report, "tokens": [s.token for s in steps], "peak": mx.get_peak_memory()}), flush=True)
        return
    group = connect(30)
    rank = group.rank()
    if options.pid_dir is not None:
        (options.pid_dir / f"rank{rank}").write_text(str(os.getpid()))
    with pipeline_errors(rank):
        stage, mine = load_stage(options.model, rank, group.size(), mx.float32, False)
        check_agreement(mine, group)
        report = {"rank": rank, "blocks": mine[5:7], "weights": mx.get_active_memory()}
        if rank > 0:
            serve(stage, mine[5], group)
        else:
            stage.attach(Link(group), mine[0])
            draft = None if options.draft is None else load_model(options.draft, dtype=mx.float32)
            extra = {} if draft is None else {"draft": draft, "num_draft_tokens": 3, "draft_policy": "fixed"}
            steps = list(stream_generate(stage, None, list(range(5, 17)), max_tokens=options.tokens, **extra))
            report.update(tokens=[s.token for s in steps], accepted=getattr(steps[-1].stats, "accepted", None))
            close(stage)
    report["peak"] = mx.get_peak_memory()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    try:
        main()
    except MlxspecError as exc:  # as the CLI reports it: one line
        sys.exit(f"error: {exc}")
