"""What verification costs a mixture of experts: a pass over k+1 tokens reads the experts
any of them chose, so it costs more, relative to a decode step, than in a dense model.

    python benchmarks/moe.py [--repeats 15]

A Mixtral-shaped model (8 experts, top 2) and a dense model with the same compute per
token (the FFN twice one expert's width), random weights, float32: per pass of n tokens
after a 64-token context, the median time, relative to n = 1, and how many distinct
experts a layer read; then the round times the calibration measures with a 1-layer draft
and the draft length the cost policy picks from them. Writes benchmarks/results/moe/
report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlxspec.engine.calibrate import calibrate  # noqa: E402
from mlxspec.engine.policy import best_k  # noqa: E402
from mlxspec.models import Model, ModelArgs, TransformerBlock  # noqa: E402
from mlxspec.models.moe import SparseMoE  # noqa: E402

OUT = Path(__file__).parent / "results" / "moe"
SIZES = range(1, 9)
SHAPE = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2, vocab_size=32000,
             sliding_window=None)


def models() -> dict[str, Model]:
    mx.random.seed(0)
    built = {"moe (8 experts, top 2)": Model(ModelArgs(**SHAPE, intermediate_size=1024, model_type="mixtral",
                                                       num_local_experts=8, num_experts_per_tok=2)),
             "dense (same compute a token)": Model(ModelArgs(**SHAPE, intermediate_size=2048))}
    for model in built.values():
        mx.eval(model.parameters())
    return built


def experts_read(model: Model, tokens: mx.array, cache: list) -> float:
    """Distinct experts a layer reads in one pass over `tokens`, averaged over layers."""
    seen: list[int] = []
    original = SparseMoE.route

    def route(self, x):
        chosen, weights = original(self, x)
        seen.append(len(set(chosen.flatten().tolist())))
        return chosen, weights

    SparseMoE.route, TransformerBlock.step_tokens = route, 0  # the uncompiled blocks, to see the routes
    try:
        mx.eval(model(tokens, cache))
    finally:
        SparseMoE.route, TransformerBlock.step_tokens = original, 16
    return statistics.mean(seen) if seen else 0.0


def passes(model: Model, repeats: int) -> dict[int, dict[str, float]]:
    cache = model.make_cache(max_rollback=max(SIZES))
    mx.eval(model(mx.array([[(7 * i + 3) % 32000 for i in range(64)]]), cache))
    out = {}
    for n in SIZES:
        times, read = [], []
        for r in range(repeats + 2):
            tokens = mx.array([[(97 * (r * 8 + i) + 11) % 32000 for i in range(n)]])
            start = time.perf_counter()
            mx.eval(model(tokens, cache))
            if r >= 2:
                times.append(time.perf_counter() - start)
            for c in cache:
                c.rollback(n)
            if "block_sparse_moe" in model.layers[0]:
                read.append(experts_read(model, tokens, cache))
                for c in cache:
                    c.rollback(n)
        out[n] = {"ms": 1000 * statistics.median(times), "experts": statistics.mean(read) if read else None}
    return out


def mlx_lm_passes(model: Model, repeats: int) -> dict[int, dict[str, float]]:
    """The same passes through mlx-lm's Mixtral holding the same weights (its names are ours)."""
    from mlx.utils import tree_flatten
    from mlx_lm.models import mixtral
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    a = model.args
    theirs = mixtral.Model(mixtral.ModelArgs(
        model_type="mixtral", vocab_size=a.vocab_size, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_hidden_layers, num_attention_heads=a.num_attention_heads,
        num_experts_per_tok=a.num_experts_per_tok, num_key_value_heads=a.num_key_value_heads,
        num_local_experts=a.num_local_experts, rms_norm_eps=a.rms_norm_eps, rope_theta=a.rope_theta))
    theirs.load_weights(list(tree_flatten(model.parameters())))
    mx.eval(theirs.parameters())
    cache = make_prompt_cache(theirs)
    mx.eval(theirs(mx.array([[(7 * i + 3) % 32000 for i in range(64)]]), cache=cache))
    out = {}
    for n in SIZES:
        times = []
        for r in range(repeats + 2):
            tokens = mx.array([[(97 * (r * 8 + i) + 11) % 32000 for i in range(n)]])
            start = time.perf_counter()
            mx.eval(theirs(tokens, cache=cache))
            if r >= 2:
                times.append(time.perf_counter() - start)
            trim_prompt_cache(cache, n)
        out[n] = {"ms": 1000 * statistics.median(times), "experts": None}
    return out


def calibrated(model: Model, draft: Model) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        timings = calibrate(model, draft, 7, cache_dir=Path(folder))
    rounds = {k: 1000 * t for k, t in timings.rounds.items()}
    picks = {alpha: best_k(alpha, timings, 7) for alpha in (0.5, 0.7, 0.9)}
    return {"round_ms": rounds, "best_k": picks}


def markdown(report: dict) -> str:
    names = list(report["passes"])
    columns = {**report["passes"], "mlx-lm's Mixtral, same weights": report["mlx_lm_moe"]}
    lines = ["| tokens a pass | " + " | ".join(f"{n} ms (x step)" for n in columns) + " | experts read a layer (MoE) |",
             "|---" * (len(columns) + 2) + "|"]
    for size in SIZES:
        cells = [f"{c[size]['ms']:.1f} ({c[size]['ms'] / c[1]['ms']:.2f}x)" for c in columns.values()]
        lines.append(f"| {size} | " + " | ".join(cells) + f" | {report['passes'][names[0]][size]['experts']:.2f} of 8 |")
    lines += ["", "| calibrated round (1-layer draft) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in range(8):
        lines.append(f"| k = {k} | " + " | ".join(f"{report['calibration'][n]['round_ms'][k]:.1f} ms" for n in names) + " |")
    for alpha in (0.5, 0.7, 0.9):
        lines.append(f"| best k at acceptance {alpha} | "
                     + " | ".join(str(report["calibration"][n]["best_k"][alpha]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    options = parser.parse_args()
    built = models()
    mx.random.seed(1)
    draft = Model(ModelArgs(**{**SHAPE, "num_hidden_layers": 1, "hidden_size": 128, "num_attention_heads": 4},
                            intermediate_size=256))
    mx.eval(draft.parameters())
    report = {"passes": {n: passes(m, options.repeats) for n, m in built.items()},
              "mlx_lm_moe": mlx_lm_passes(built["moe (8 experts, top 2)"], options.repeats),
              "calibration": {n: calibrated(m, draft) for n, m in built.items()}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    report = json.loads(json.dumps(report), object_hook=lambda d: {
        (int(k) if k.isdigit() else float(k) if k.replace(".", "", 1).isdigit() else k): v for k, v in d.items()})
    (OUT / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
