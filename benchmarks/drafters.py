"""Which draft wins where: every drafter on the real demo target (SmolLM2-135M-Instruct,
fp32), per prompt category (open chat, code, grounded work), in one run, side by side with
mlx-lm's plain loop and its draft loop. Runs are interleaved (repeats outermost) so machine
noise spreads evenly; each configuration's rate is its tokens over its decoding time,
summed over the category's prompts (medians over repeats), and its speedup is against
mlxspec's plain decoding in the same run.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/drafters.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Iterator

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.engine.options import GenerationOptions  # noqa: E402
from mlxspec.baseline import mlx_lm_models, mlx_lm_tokens, rounds_from_flags  # noqa: E402
from mlxspec.bench import timed_run  # noqa: E402
from mlxspec.demo import demo_draft, demo_target, demo_token_draft  # noqa: E402
from mlxspec.prompts import BUILTIN_PROMPTS  # noqa: E402
from mlxspec.report import environment  # noqa: E402

CATEGORIES = {"open chat": ["chat"], "code": ["code"], "grounded": ["grounded", "summarisation"]}
MLX_LM_K = 3  # mlx-lm's loop drafts a fixed number; 3 is about the best for this draft model


def sessions(k_lookup: int, k_model: int) -> tuple[dict[str, mlxspec.Session], Any]:
    """mlxspec's configurations (plain and one adaptive session per drafter) and mlx-lm's models."""
    target, tokenizer = mlxspec.load(demo_target(), dtype=mx.float32, dequantize=True)
    load = lambda path: mlxspec.load_draft(path, target, tokenizer, dtype=mx.float32, dequantize=True)  # noqa: E731
    token_draft = load(demo_token_draft())
    runs = {"mlxspec plain": mlxspec.Session(target, tokenizer),
            "prompt lookup": mlxspec.Session(target, tokenizer, "ngram", num_draft_tokens=k_lookup),
            "draft model": mlxspec.Session(target, tokenizer, token_draft, num_draft_tokens=k_model),
            "feature draft": mlxspec.Session(target, tokenizer, load(demo_draft()), num_draft_tokens=k_model)}
    return runs, mlx_lm_models(target, token_draft)


def one_run(name: str, runs: dict, theirs: Any, ids: list[int], n: int, temperature: float,
            eos: set[int], seed: int) -> dict:
    """One generation of one configuration: tokens, decoding seconds, drafted/accepted per position."""
    if name.startswith("mlx-lm"):
        k = 0 if name == "mlx-lm plain" else MLX_LM_K
        run, flags = timed_run(mlx_lm_tokens(*theirs, ids, GenerationOptions(max_tokens=n, temperature=temperature), k, seed), eos, n)
        drafted, accepted = rounds_from_flags(flags, k) if k else ([], [])
        return {"tokens": run.tokens, "seconds": run.decode_time, "drafted": drafted, "accepted": accepted}
    stats: dict[str, Any] = {}

    def pairs() -> Iterator[tuple[int, bool]]:
        for step in runs[name].stream(ids, max_tokens=n, temperature=temperature, seed=seed):
            stats["last"] = step.stats
            yield step.token, step.from_draft

    run, _ = timed_run(pairs(), eos, n)
    last = stats["last"]
    return {"tokens": run.tokens, "seconds": run.decode_time,
            "drafted": list(getattr(last, "drafted_per_position", [])),
            "accepted": list(getattr(last, "accepted_per_position", []))}


def summary(results: dict[tuple[str, str, float], list[list[dict]]]) -> list[dict]:
    """Per category, temperature and configuration: median rate over repeats, speedup, acceptance per position."""
    rows = []
    for (category, name, temperature), repeats in sorted(results.items()):
        rates = [sum(r["tokens"] - 1 for r in runs) / sum(r["seconds"] for r in runs) for runs in repeats]
        drafted = [sum(r["drafted"][i] for runs in repeats for r in runs if i < len(r["drafted"])) for i in range(4)]
        accepted = [sum(r["accepted"][i] for runs in repeats for r in runs if i < len(r["accepted"])) for i in range(4)]
        rows.append({"category": category, "config": name, "temperature": temperature,
                     "tokens_per_s": statistics.median(rates),
                     "acceptance_per_position": [a / d if d else None for a, d in zip(accepted, drafted)]})
    for row in rows:
        plain = next(r for r in rows if r["config"] == "mlxspec plain" and
                     (r["category"], r["temperature"]) == (row["category"], row["temperature"]))
        row["speedup"] = row["tokens_per_s"] / plain["tokens_per_s"]
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| category | T | configuration | tok/s | vs mlxspec plain | acceptance per position (1..4) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        acc = " / ".join("-" if a is None else f"{a:.2f}" for a in r["acceptance_per_position"])
        lines.append(f"| {r['category']} | {r['temperature']:g} | {r['config']} | {r['tokens_per_s']:.1f} | "
                     f"{r['speedup']:.2f}x | {acc} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperatures", default="0,1")
    parser.add_argument("--k-lookup", type=int, default=16)
    parser.add_argument("--k-model", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "drafters")
    args = parser.parse_args()
    runs, theirs = sessions(args.k_lookup, args.k_model)
    names = [*runs, "mlx-lm plain", f"mlx-lm draft model k={MLX_LM_K}"]
    tokenizer = runs["mlxspec plain"].tokenizer
    temps = [float(t) for t in args.temperatures.split(",")]
    prompts = [(c, tokenizer.apply_chat(p)) for c, kinds in CATEGORIES.items() for k in kinds for p in BUILTIN_PROMPTS[k]]
    for temperature in temps:  # calibrate every drafter before anything is timed
        for session in runs.values():
            if session.draft is not None:
                session.timings(mlxspec.SamplingParams(temperature))
    results: dict[tuple[str, str, float], list[list[dict]]] = {}
    for repeat in range(args.repeats):
        for temperature in temps:
            for p, (category, ids) in enumerate(prompts):
                for name in names:
                    run = one_run(name, runs, theirs, ids, args.max_tokens, temperature, tokenizer.eos_ids,
                                  seed=1000 * repeat + p)
                    results.setdefault((category, name, temperature), [[] for _ in range(args.repeats)])[repeat].append(run)
                print(f"repeat {repeat + 1}, T={temperature:g}, prompt {p + 1}/{len(prompts)} done", file=sys.stderr)
    rows = summary(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps({"rows": rows, "max_tokens": args.max_tokens,
                                                      "repeats": args.repeats, "environment": environment()}, indent=1))
    (args.out / "report.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
