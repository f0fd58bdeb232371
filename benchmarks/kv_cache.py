"""The quantized key/value cache on the demo pair, side by side with mlx-lm's `kv_bits`.

SmolLM2-135M-Instruct (float32 on the CPU backend) answers a long prompt (the README's
text, ~--prompt-tokens tokens) plainly and speculatively with the shipped feature draft,
with full-precision caches and at --kv-bits 8 and 4 (groups of 64); mlx-lm's loop runs the
same weights at the same bits (its `quantized_kv_start=0`). For each: the bytes the caches
hold after the prompt, prompt and generation tok/s (medians of --runs), and whether the
speculative text equals plain decoding's over the same cache (greedy).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/kv_cache.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec import demo  # noqa: E402
from mlxspec.baseline import mlx_lm_models  # noqa: E402
from mlxspec.models import kv_quantization  # noqa: E402
from mlxspec.report import write_tables  # noqa: E402


def prompt_ids(tokenizer, n: int) -> list[int]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    ids = tokenizer.encode("Summarise this text:\n" + text)[: n - 8]
    return ids + tokenizer.encode("\nSummary:")


def cache_bytes(model, ids: list[int], bits: int | None) -> int:
    cache = model.make_cache(kv=kv_quantization(bits))
    model(mx.array([ids]), cache)
    mx.eval(cache.arrays())
    return cache.nbytes


def ours(session, ids: list[int], n: int, speculative: bool) -> tuple[list[int], float, float]:
    start, first, tokens = time.perf_counter(), None, []
    for step in session.stream(ids, max_tokens=n, speculative=speculative, prompt_cache=False):
        first = first or time.perf_counter()
        tokens.append(step.token)
    end = time.perf_counter()
    return tokens, len(ids) / (first - start), (len(tokens) - 1) / (end - first)


def theirs(model, ids: list[int], n: int, bits: int | None) -> tuple[list[int], float, float]:
    from mlx_lm.generate import generate_step

    start, first, tokens = time.perf_counter(), None, []
    steps = generate_step(mx.array(ids), model, max_tokens=n, kv_bits=bits, kv_group_size=64, quantized_kv_start=0)
    for token, _ in steps:
        first = first or time.perf_counter()
        tokens.append(int(token))
    end = time.perf_counter()
    return tokens, len(ids) / (first - start), (len(tokens) - 1) / (end - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    target, tokenizer = mlxspec.load(demo.demo_target(), dtype=mx.float32, dequantize=True)
    draft = mlxspec.load_draft(demo.demo_draft(), target, tokenizer, dtype=mx.float32, dequantize=True)
    their_model, _ = mlx_lm_models(target, None)  # the same float32 weights in mlx-lm's module
    ids = prompt_ids(tokenizer, args.prompt_tokens)
    rows = []
    for bits in (None, 8, 4):
        session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=4, kv_bits=bits)
        ours(session, ids[:64], 4, True)  # calibration and warm-up outside the timings
        theirs(their_model, ids[:64], 4, bits)
        runs = {name: [] for name in ("plain", "speculative", "mlx-lm")}
        for _ in range(args.runs):  # alternating, so drift hits all three alike
            runs["plain"].append(ours(session, ids, args.max_tokens, False))
            runs["speculative"].append(ours(session, ids, args.max_tokens, True))
            runs["mlx-lm"].append(theirs(their_model, ids, args.max_tokens, bits))
        same = runs["plain"][0][0] == runs["speculative"][0][0]
        row = {"kv_bits": bits or "none", "cache MiB": round(cache_bytes(target, ids, bits) / 2**20, 2),
               "same text (spec == plain)": same}
        for name, got in runs.items():
            row[f"{name} prompt tok/s"] = round(statistics.median(r[1] for r in got), 1)
            row[f"{name} gen tok/s"] = round(statistics.median(r[2] for r in got), 1)
        rows.append(row)
        print(row, flush=True)
    params = {"prompt_tokens": len(ids), "max_tokens": args.max_tokens, "runs": args.runs, "group_size": 64,
              "device": str(mx.default_device()), "weights": "float32 (dequantized)", "draft": "feature, k <= 4"}
    heads = list(rows[0])
    table = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    table += ["| " + " | ".join(str(r[h]) for h in heads) + " |" for r in rows]
    print("\n".join(table))
    print(write_tables(RESULTS, "kv_cache", {"parameters": params, "rows": rows}, table))


if __name__ == "__main__":
    main()
