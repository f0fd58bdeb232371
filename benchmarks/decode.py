"""Prefill and decode speed of mlxspec vs mlx-lm, side by side in one process.

A ~300M-parameter Mistral-shaped checkpoint (random weights, HF layout) is written once;
both libraries load the same folder (fp32) and the same mlx-lm 4-bit conversion of it.
Runs alternate between the libraries; each figure is the median of --runs runs.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/decode.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, rates, timed_tokens  # noqa: E402
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.layout import hf_tensor_shapes  # noqa: E402
from mlxspec.models import ModelArgs  # noqa: E402
from mlxspec.report import write_tables  # noqa: E402

# Mistral-shaped, ~283M parameters: 16 layers, GQA 16/4 heads of 64, SwiGLU 3584, vocab 32000.
ARGS = ModelArgs(hidden_size=1024, num_hidden_layers=16, intermediate_size=3584, num_attention_heads=16,
                 num_key_value_heads=4, vocab_size=32000, rope_theta=1e6, max_position_embeddings=32768)


def mlxspec_tokens(model, prompt: list[int], n: int):
    for step in mlxspec.stream_generate(model, None, prompt, max_tokens=n):  # ids only, no EOS stop
        yield step.token


def mlx_lm_tokens(model, prompt: list[int], n: int):
    from mlx_lm.generate import generate_step

    for (token, _), _ in zip(generate_step(mx.array(prompt), model, max_tokens=n), range(n)):
        yield int(token)


def measure(name: str, folder: Path, prompt_len: int, gen: int, runs: int) -> dict:
    import mlx_lm

    ours, _ = mlxspec.load(folder)
    theirs, _ = mlx_lm.load(str(folder))
    prompt = np.random.default_rng(0).integers(3, ARGS.vocab_size, size=prompt_len).tolist()
    results = {"mlxspec": {"prefill": [], "decode": [], "peak_gb": []},
               "mlx-lm": {"prefill": [], "decode": [], "peak_gb": []}}
    outputs = {}
    for run in range(runs + 1):  # run 0 warms up both
        for lib, model, fn in (("mlxspec", ours, mlxspec_tokens), ("mlx-lm", theirs, mlx_lm_tokens)):
            mx.clear_cache()
            mx.reset_peak_memory()
            stamps = list(timed_tokens(fn(model, prompt, gen)))
            outputs[lib] = [t for t, _ in stamps]
            if run == 0:
                continue
            prefill, decode = rates([s for _, s in stamps], prompt_len)
            results[lib]["prefill"].append(prefill)
            results[lib]["decode"].append(decode)
            results[lib]["peak_gb"].append(mx.get_peak_memory() / 1e9)
            print(f"  {name} run {run} {lib:8s} prefill {prefill:8.1f} tok/s  decode {decode:7.2f} tok/s", flush=True)
    summary = {lib: {k: statistics.median(v) for k, v in r.items()} | {"runs": r} for lib, r in results.items()}
    summary["same_tokens"] = outputs["mlxspec"] == outputs["mlx-lm"]
    summary["prompt_tokens"], summary["generated_tokens"] = prompt_len, gen
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="measured runs per library and dtype (median reported)")
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens (fp32)")
    parser.add_argument("--tokens", type=int, default=128, help="generated tokens (fp32)")
    parser.add_argument("--q-prompt", type=int, default=64, help="prompt tokens (4-bit; slow on MLX's CPU backend)")
    parser.add_argument("--q-tokens", type=int, default=32, help="generated tokens (4-bit)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the checkpoints (default: a temp folder)")
    args = parser.parse_args()

    from mlx_lm import convert

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        fp32 = work / "mistral-300m"
        if not (fp32 / "config.json").exists():
            write_random_hf_checkpoint(fp32, ARGS, seed=0, tokenizer_file=mistral_tokenizer_file())
        q4 = work / "mistral-300m-4bit"
        if not (q4 / "config.json").exists():
            convert(str(fp32), mlx_path=str(q4), quantize=True, q_bits=4, q_group_size=64, dtype="float32")
        cases = {
            "fp32": measure("fp32", fp32, args.prompt, args.tokens, args.runs),
            "4-bit": measure("4-bit", q4, args.q_prompt, args.q_tokens, args.runs),
        }
    params = sum(int(np.prod(shape)) for _, shape in hf_tensor_shapes(ARGS))
    table = [
        f"Mistral-shaped model, {params / 1e6:.0f}M parameters, batch 1, greedy; median of {args.runs} runs.",
        "",
        "| weights | prompt/gen tokens | mlxspec prefill tok/s | mlx-lm prefill tok/s | ratio | mlxspec decode tok/s | mlx-lm decode tok/s | ratio | same tokens |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in cases.items():
        a, b = c["mlxspec"], c["mlx-lm"]
        table.append(
            f"| {name} | {c['prompt_tokens']}/{c['generated_tokens']} | {a['prefill']:.1f} | {b['prefill']:.1f} | "
            f"{a['prefill'] / b['prefill']:.3f} | {a['decode']:.2f} | {b['decode']:.2f} | "
            f"{a['decode'] / b['decode']:.3f} | {c['same_tokens']} |"
        )
    path = write_tables(RESULTS, "decode", {"parameters": params, "cases": cases}, table)
    print("\n".join(table))
    print(f"\nwritten: {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
