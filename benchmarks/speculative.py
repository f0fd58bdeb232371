"""Plain vs speculative decoding, mlxspec and mlx-lm side by side in one process.

Pairs (random weights; fp32 so MLX's CPU backend runs at BLAS speed):
  * same:   draft = target (acceptance 1: measures the loop's own overhead),
  * layers: draft = the target's first 2 of 16 layers + its norm and head (a self-draft,
            the cheapest realistic draft one can build without a trained model).
For each: plain decoding, then k = 2, 4, 6 and adaptive, at temperature 0 and 1. Reports
tokens/s, acceptance, tokens per round, Leviathan et al.'s predicted speedup from the
measured acceptance and cost ratio, and the measured speedup. A last check runs both
speculative loops on a sliding-window model past its window and compares each with its
library's own plain greedy output.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/speculative.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, median, write_report  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.config import ModelArgs  # noqa: E402
from mlxspec.convert.synthetic import write_random_hf_checkpoint  # noqa: E402
from mlxspec.costmodel import calibrate, expected_tokens  # noqa: E402
from mlxspec.convert.synthetic import mistral_tokenizer_file  # noqa: E402
from mlxspec.sampling import SamplingParams  # noqa: E402

TARGET = ModelArgs(hidden_size=768, num_hidden_layers=16, intermediate_size=2048, num_attention_heads=12,
                   num_key_value_heads=4, vocab_size=32000, max_position_embeddings=32768)


def truncated(folder: Path, out: Path, layers: int) -> Path:
    """A self-draft: the first `layers` blocks of the checkpoint in `folder`, same head."""
    import json
    import shutil

    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = layers
    out.mkdir(parents=True, exist_ok=True)
    weights = mx.load(str(folder / "model.safetensors"))
    keep = {k: v for k, v in weights.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    mx.save_safetensors(str(out / "model.safetensors"), keep)
    (out / "config.json").write_text(json.dumps(config))
    for f in folder.glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    return out


def run_mlxspec(target, draft, prompt, n, temp, k, adaptive):
    start = time.perf_counter()
    steps = list(mlxspec.stream_generate(target, None, prompt, max_tokens=n, temperature=temp, seed=0,
                                         draft=draft, num_draft_tokens=k or 1, adaptive=adaptive))
    wall = time.perf_counter() - start
    stats = steps[-1].stats
    out = {"tokens_per_s": len(steps) / wall, "wall_s": wall, "tokens": [s.token for s in steps]}
    if draft is not None:
        out.update(acceptance=stats.acceptance_rate, tokens_per_round=stats.tokens_per_round,
                   k_counts=dict(stats.k_counts),
                   per_position=[a / d if d else None for a, d in zip(stats.accepted_per_position, stats.drafted_per_position)])
    return out


def run_mlx_lm(target, draft, prompt, n, temp, k):
    from mlx_lm.generate import generate_step, speculative_generate_step
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(0)
    sampler = make_sampler(temp=temp)
    if draft is None:
        gen = ((int(t), False) for (t, _), _ in zip(generate_step(mx.array(prompt), target, max_tokens=n, sampler=sampler), range(n)))
    else:
        gen = ((int(t), bool(d)) for (t, _, d), _ in zip(speculative_generate_step(
            mx.array(prompt), target, draft, num_draft_tokens=k, max_tokens=n, sampler=sampler), range(n)))
    stamps, tokens, from_draft = [], [], 0
    start = time.perf_counter()
    for tok, d in gen:
        stamps.append(time.perf_counter())
        tokens.append(tok)
        from_draft += d
    out = {"tokens_per_s": len(tokens) / (stamps[-1] - start), "wall_s": stamps[-1] - start, "tokens": tokens}
    if draft is not None:
        rounds = len(tokens) - from_draft
        out.update(acceptance=from_draft / (rounds * k), tokens_per_round=len(tokens) / rounds)
    return out


def predicted_speedup(alpha: float, k: int, timings) -> float:
    """Leviathan et al.: expected tokens per round over the round's measured cost, relative to
    a plain decoding step (`timings` calibrated for the run's kind of sampling)."""
    return expected_tokens(alpha, k) * timings.round(0) / timings.round(k)


def bench_pair(name, target, draft, their_target, their_draft, prompt, args, rows, payload):
    """`target`/`draft`: mlxspec models; `their_*`: the same folders loaded by mlx-lm.
    Every configuration runs once per pass, passes repeat `args.runs` times (interleaved,
    so slow phases of the machine hit all configurations alike); medians are reported."""
    ks = (2, 4, 6, "adaptive")
    for temp in (0.0, 1.0):
        timings = calibrate(target, draft, 6, SamplingParams(temperature=temp))
        configs = {("mlxspec", 0): lambda: run_mlxspec(target, None, prompt, args.tokens, temp, 0, False),
                   ("mlx-lm", 0): lambda: run_mlx_lm(their_target, None, prompt, args.tokens, temp, 0)}
        for k in ks:
            kk = 6 if k == "adaptive" else k
            configs[("mlxspec", k)] = (lambda kk=kk, k=k: run_mlxspec(target, draft, prompt, args.tokens, temp, kk,
                                                                      k == "adaptive"))
            if k != "adaptive":
                configs[("mlx-lm", k)] = lambda kk=kk: run_mlx_lm(their_target, their_draft, prompt, args.tokens, temp, kk)
        results = {key: [] for key in configs}
        for _ in range(args.runs):
            for key, fn in configs.items():
                results[key].append(fn())
        med = lambda key, field: median([r[field] for r in results[key]])  # noqa: E731
        base = med(("mlxspec", 0), "tokens_per_s")
        for k in ks:
            kk = 6 if k == "adaptive" else k
            ours = results[("mlxspec", k)]
            alpha = med(("mlxspec", k), "acceptance")
            row = {"pair": name, "temperature": temp, "k": k, "plain_tps": base, "spec_tps": med(("mlxspec", k), "tokens_per_s"),
                   "predicted": predicted_speedup(alpha, kk, timings) if k != "adaptive" else None,
                   "acceptance": alpha, "tokens_per_round": med(("mlxspec", k), "tokens_per_round"),
                   "k_counts": ours[-1]["k_counts"], "per_position": ours[-1]["per_position"],
                   "mlx_lm_plain_tps": med(("mlx-lm", 0), "tokens_per_s")}
            row["speedup"] = row["spec_tps"] / base
            if ("mlx-lm", k) in results:
                row.update(mlx_lm_spec_tps=med(("mlx-lm", k), "tokens_per_s"), mlx_lm_acceptance=med(("mlx-lm", k), "acceptance"))
            if temp == 0:
                row["greedy_equal"] = all(r["tokens"] == results[("mlxspec", 0)][0]["tokens"] for r in ours)
            rows.append(row)
            print(f"  {name} T={temp} k={k}: {row['spec_tps']:.2f} tok/s (plain {base:.2f}), acceptance {alpha:.2f}"
                  + (f", mlx-lm {row['mlx_lm_spec_tps']:.2f} tok/s acc {row['mlx_lm_acceptance']:.2f}"
                     if "mlx_lm_spec_tps" in row else ""), flush=True)
        payload["timings"].setdefault(name, {"draft_step": timings.draft_step, "target_pass": timings.target_pass,
                                             "rounds": {}})["rounds"][f"{temp:g}"] = timings.rounds


def window_check(work: Path) -> dict:
    """Both speculative loops on a sliding-window model, far past the window, vs plain greedy."""
    import mlx_lm
    from mlx_lm.generate import generate_step, speculative_generate_step

    args = ModelArgs(hidden_size=256, num_hidden_layers=4, intermediate_size=512, num_attention_heads=8,
                     num_key_value_heads=2, vocab_size=32000, sliding_window=32, max_position_embeddings=4096)
    folder = write_random_hf_checkpoint(work / "window", args, seed=7, tokenizer_file=mistral_tokenizer_file())
    prompt = list(range(100, 110))
    n = 160  # five windows past the prompt
    ours, _ = mlxspec.load(folder)
    plain = [s.token for s in mlxspec.stream_generate(ours, None, prompt, max_tokens=n)]
    spec = [s.token for s in mlxspec.stream_generate(ours, None, prompt, max_tokens=n, draft=ours,
                                                     num_draft_tokens=4, adaptive=False)]
    theirs, _ = mlx_lm.load(str(folder))
    their_plain = [int(t) for (t, _), _ in zip(generate_step(mx.array(prompt), theirs, max_tokens=n), range(n))]
    try:
        their_spec = [int(t) for (t, _, _), _ in zip(speculative_generate_step(
            mx.array(prompt), theirs, theirs, num_draft_tokens=4, max_tokens=n), range(n))]
        their_equal, their_error = their_spec == their_plain, None
    except Exception as exc:  # record what happens, whatever it is
        their_equal, their_error = False, f"{type(exc).__name__}: {exc}"
    return {"window": 32, "generated": n, "mlxspec_equal": spec == plain, "mlx_lm_equal": their_equal,
            "mlx_lm_error": their_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median reported)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per run")
    args = parser.parse_args()
    os.environ.setdefault("MLXSPEC_CACHE", tempfile.mkdtemp(prefix="mlxspec-calibration-"))

    rows: list[dict] = []
    payload: dict = {"environment": environment(), "timings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tfolder = write_random_hf_checkpoint(work / "target", TARGET, seed=0, tokenizer_file=mistral_tokenizer_file())
        dfolder = truncated(tfolder, work / "draft", layers=2)
        import mlx_lm

        target, _ = mlxspec.load(tfolder)
        draft, _ = mlxspec.load(dfolder)
        their_target, _ = mlx_lm.load(str(tfolder))
        their_draft, _ = mlx_lm.load(str(dfolder))
        prompt = np.random.default_rng(0).integers(3, 32000, size=32).tolist()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bench_pair("same", target, target, their_target, their_target, prompt, args, rows, payload)
        bench_pair("layers", target, draft, their_target, their_draft, prompt, args, rows, payload)
        payload["window_check"] = window_check(work)
    payload["rows"] = rows
    table = [
        f"Target: {TARGET.num_hidden_layers} layers, hidden {TARGET.hidden_size} (fp32, random weights); "
        f"{args.tokens} tokens after a 32-token prompt, median of {args.runs} runs; tok/s = tokens / wall time "
        "from the call to the last token (prefill included, the same for both libraries).",
        "",
        "| pair | T | k | plain tok/s | spec tok/s | speedup | predicted | acceptance | tok/round | mlx-lm spec tok/s | mlx-lm acceptance | ours / mlx-lm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def fmt(x: float | None) -> str:
        return "" if x is None else f"{x:.2f}"

    for r in rows:
        theirs = r.get("mlx_lm_spec_tps")
        ratio = None if theirs is None else r["spec_tps"] / theirs
        cells = [r["pair"], f"{r['temperature']:g}", str(r["k"]), fmt(r["plain_tps"]), fmt(r["spec_tps"]),
                 fmt(r["speedup"]), fmt(r["predicted"]), fmt(r["acceptance"]), fmt(r["tokens_per_round"]),
                 fmt(theirs), fmt(r.get("mlx_lm_acceptance")), fmt(ratio)]
        table.append("| " + " | ".join(cells) + " |")
    wc = payload["window_check"]
    table += ["", f"Sliding window {wc['window']}, {wc['generated']} tokens: speculative == plain greedy? "
                  f"mlxspec: {wc['mlxspec_equal']}, mlx-lm: {wc['mlx_lm_equal']}"
                  + (f" ({wc['mlx_lm_error']})" if wc["mlx_lm_error"] else "")]
    path = write_report("speculative", payload, table)
    print("\n".join(table))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
