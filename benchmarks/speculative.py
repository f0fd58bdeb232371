"""Plain vs speculative decoding on random-weight pairs, mlxspec and mlx-lm side by side, with
the same runner and report as `mlxspec bench` (`mlxspec.bench.run_bench`).

Pairs (random weights; fp32 so MLX's CPU backend runs at BLAS speed):
  * same:   draft = target (acceptance 1: measures the loop's own overhead),
  * layers: draft = the target's first 2 of 16 layers + its norm and head (a self-draft,
            the cheapest realistic draft one can build without a trained model).
For each: plain decoding, k = 2, 4, 6 and adaptive, at temperature 0 and 1. A last check runs
both speculative loops on a sliding-window model past its window and compares each with its
library's own plain greedy output.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/speculative.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.bench import run_bench  # noqa: E402
from mlxspec.models import ModelArgs  # noqa: E402
from mlxspec.report import markdown, write_report, write_tables  # noqa: E402

TARGET = ModelArgs(hidden_size=768, num_hidden_layers=16, intermediate_size=2048, num_attention_heads=12,
                   num_key_value_heads=4, vocab_size=32000, max_position_embeddings=32768)
PROMPTS = [("text", "Describe the water cycle, from the ocean to the clouds and back, in a few sentences.")]


def truncated(folder: Path, out: Path, layers: int) -> Path:
    """A self-draft: the first `layers` blocks of the checkpoint in `folder`, same head."""
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


def window_check(work: Path) -> dict:
    """Both speculative loops on a sliding-window model, far past the window, vs plain greedy."""
    import mlx_lm
    from mlx_lm.generate import generate_step, speculative_generate_step

    args = ModelArgs(hidden_size=256, num_hidden_layers=4, intermediate_size=512, num_attention_heads=8,
                     num_key_value_heads=2, vocab_size=32000, sliding_window=32, max_position_embeddings=4096)
    folder = write_random_hf_checkpoint(work / "window", args, seed=7, tokenizer_file=mistral_tokenizer_file())
    prompt, n = list(range(100, 110)), 160  # five windows past the prompt
    ours, _ = mlxspec.load(folder)
    plain = [s.token for s in mlxspec.stream_generate(ours, None, prompt, max_tokens=n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the draft is the target
        spec = [s.token for s in mlxspec.stream_generate(ours, None, prompt, max_tokens=n, draft=ours,
                                                         num_draft_tokens=4, draft_policy="fixed")]
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


def bench_pair(name: str, target_dir: Path, draft_dir: Path, args: argparse.Namespace) -> dict:
    """The bench's report for one pair (written to benchmarks/results/speculative-NAME/)."""
    target, tokenizer = mlxspec.load(target_dir)
    draft = mlxspec.load(draft_dir)[0] if draft_dir != target_dir else target
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "same": the draft is not smaller than the target
        report = run_bench(target, tokenizer, draft, PROMPTS, options=mlxspec.GenerationOptions(max_tokens=args.tokens),
                           temperatures=(0.0, 1.0),
                           ks=(2, 4, 6), repeats=args.runs, compare_mlx_lm=True,
                           weights="float32, random", log=lambda line: print(line, flush=True))
    write_report(report, RESULTS / f"speculative-{name}", plots=False)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (median reported)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per run")
    args = parser.parse_args()
    os.environ.setdefault("MLXSPEC_CACHE", tempfile.mkdtemp(prefix="mlxspec-calibration-"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tfolder = write_random_hf_checkpoint(work / "target", TARGET, seed=0, tokenizer_file=mistral_tokenizer_file())
        dfolder = truncated(tfolder, work / "draft", layers=2)
        reports = {name: bench_pair(name, tfolder, d, args) for name, d in (("same", tfolder), ("layers", dfolder))}
        check = window_check(work)
    table = []
    for name, report in reports.items():
        table += [f"## pair: {name}", "", markdown(report)]
    table.append(f"Sliding window {check['window']}, {check['generated']} tokens: speculative == plain greedy? "
                 f"mlxspec: {check['mlxspec_equal']}, mlx-lm: {check['mlx_lm_equal']}"
                 + (f" ({check['mlx_lm_error']})" if check["mlx_lm_error"] else ""))
    path = write_tables(RESULTS, "speculative", {"reports": reports, "window_check": check}, table)
    print("\n".join(table))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
