"""What running a model through mlx-lm costs the engine: the demo target (SmolLM2-135M-Instruct,
fp32) drafted by the demo's token draft loaded twice, by mlxspec's port and through mlx-lm's
own Llama class (as any architecture outside the port is, `mlxspec.load_mlx_lm`), side by side
with mlx-lm's plain and speculative loops holding the same weights, in one run. Greedy, a
fixed draft length; runs interleaved (repeats outermost), medians of decode tok/s; the texts
of all greedy runs must be equal.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/mlx_lm_draft.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, timed_tokens  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.baseline import mlx_lm_models, mlx_lm_tokens  # noqa: E402
from mlxspec.demo import demo_target, demo_token_draft  # noqa: E402
from mlxspec.engine.options import GenerationOptions  # noqa: E402
from mlxspec.engine.request import prompt_ids  # noqa: E402
from mlxspec.load import load_model  # noqa: E402
from mlxspec.load_mlx_lm import load_mlx_lm_model  # noqa: E402
from mlxspec.models.config import read_json  # noqa: E402
from mlxspec.prompts import BUILTIN_PROMPTS  # noqa: E402
from mlxspec.report import environment  # noqa: E402


def full_head_draft(folder: Path) -> Path:
    """The demo's token draft with its subset head spread over the whole vocabulary (other
    rows zero), which mlx-lm's Llama can load: in a folder of its own."""
    draft = load_model(demo_token_draft(), dtype=mx.float32, dequantize=True)
    weights = {k: v for k, v in tree_flatten(draft.parameters()) if not k.startswith("lm_head")}
    head = mx.zeros((draft.args.vocab_size, draft.args.hidden_size))
    head[draft.lm_head.token_ids] = draft.lm_head.out_proj.weight
    weights["lm_head.weight"] = head
    config = draft.args.to_hf_config()
    config.pop("head_vocab_size", None)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(demo_token_draft() / name, folder / name)
    return folder


def runners(k: int, folder: Path) -> dict:
    """name -> function(prompt ids, n) -> tokens, for every configuration."""
    target, tokenizer = mlxspec.load(demo_target(), dtype=mx.float32, dequantize=True)
    port = mlxspec.load_draft(folder, target, tokenizer, dtype=mx.float32, dequantize=True)
    through = load_mlx_lm_model(folder, read_json(folder / "config.json"), mx.float32, dequantize=True)
    theirs_target, theirs_draft = mlx_lm_models(target, port)
    options = GenerationOptions(temperature=0.0)

    def session(draft):
        s = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=k, draft_policy="fixed")
        return lambda ids, n: (s.stream(ids, max_tokens=n, prompt_cache=False, speculative=draft is not None))

    def theirs(draft):
        return lambda ids, n: (t for t, _ in mlx_lm_tokens(theirs_target, draft, ids, options, 0 if draft is None else k, 0))

    return {"mlxspec plain": session(None), "mlxspec, draft by the port": session(port),
            "mlxspec, draft through mlx-lm": session(through), "mlx-lm plain": theirs(None),
            "mlx-lm speculative": theirs(theirs_draft)}, tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=64)
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs, tokenizer = runners(args.k, full_head_draft(Path(scratch) / "draft"))
        measure(runs, tokenizer, args)


def measure(runs: dict, tokenizer, args: argparse.Namespace) -> None:
    """Interleaved runs, the table, and the JSON + Markdown results."""
    prompts = [prompt_ids(tokenizer, p, chat=True) for p in BUILTIN_PROMPTS["chat"][: args.prompts]]
    rates_by: dict[str, list[float]] = {name: [] for name in runs}
    texts: dict[str, list[list[int]]] = {name: [] for name in runs}
    for repeat in range(args.repeats + 1):  # the first round warms up (compiles), not counted
        for name, run in runs.items():
            total_tokens, total_time, outs = 0, 0.0, []
            for ids in prompts:
                stamps, tokens = [], []
                for step, t in timed_tokens(run(ids, args.n)):
                    tokens.append(step if isinstance(step, int) else step.token)
                    stamps.append(t)
                total_tokens, total_time = total_tokens + len(stamps) - 1, total_time + stamps[-1] - stamps[0]
                outs.append(tokens[: args.n])
            if repeat:
                rates_by[name].append(total_tokens / total_time)
                texts[name] = outs
    reference = texts["mlxspec plain"]
    rows = [{"configuration": name, "decode_tok_s": statistics.median(r), "same_text": texts[name] == reference}
            for name, r in rates_by.items()]
    base = rows[0]["decode_tok_s"]
    lines = ["| configuration | decode tok/s (median) | x mlxspec plain | text = plain |", "|---|---|---|---|"]
    lines += [f"| {r['configuration']} | {r['decode_tok_s']:.1f} | {r['decode_tok_s'] / base:.2f}x | {r['same_text']} |"
              for r in rows]
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mlx_lm_draft.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                           "environment": environment()}, indent=2))
    (RESULTS / "mlx_lm_draft.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
