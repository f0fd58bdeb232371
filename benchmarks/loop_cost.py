"""What the decoding loop itself costs per token: a tiny pair (hidden size 32, one block,
the draft the target itself, so every draft is accepted) makes the models' compute
negligible, and what is left is the loop's own work (building graphs, drafters, rollback,
verification, read-backs). A change to the loop shows here long before it shows in a real
model's tokens per second, which the noise of a shared machine hides.

Run it with each environment's Python to compare two checkouts (outside the repository, so
that each imports its own mlxspec); output: benchmarks/results/loop-cost/report.{json,md}.

    LD_PRELOAD=... .venv/bin/python benchmarks/loop_cost.py [--tokens 400] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import mlx.core as mx

import mlxspec
from common import RESULTS
from mlxspec.models import Model, ModelArgs


def tiny(seed: int) -> Model:
    mx.random.seed(seed)
    model = Model(ModelArgs(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=2,
                            num_key_value_heads=1, vocab_size=64, sliding_window=None))
    mx.eval(model.parameters())
    return model


def per_token(session: mlxspec.Session, speculative: bool, tokens: int, repeats: int) -> float:
    """Median microseconds per generated token over `repeats` runs (after a warm-up)."""
    list(session.stream([1, 2, 3], max_tokens=50, speculative=speculative))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        steps = list(session.stream([1, 2, 3], max_tokens=tokens, speculative=speculative))
        times.append((time.perf_counter() - start) / len(steps) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the draft is as large as the target, on purpose
    target = tiny(1)
    model = mlxspec.Session(target, None, target, num_draft_tokens=2, draft_policy="fixed")
    lookup = mlxspec.Session(target, None, "ngram", num_draft_tokens=2, draft_policy="fixed")
    report = {"mlxspec": mlxspec.__file__, "tokens": args.tokens, "repeats": args.repeats, "us_per_token": {
        "plain": per_token(model, False, args.tokens, args.repeats),
        "draft model, k=2": per_token(model, True, args.tokens, args.repeats),
        "prompt lookup, k=2": per_token(lookup, True, args.tokens, args.repeats)}}
    out = RESULTS / "loop-cost"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["| loop | µs per token |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in report["us_per_token"].items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"mlxspec from {report['mlxspec']}\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
