"""`mlxspec plan` against the memory a run actually takes: plans a checkpoint (and a draft) at a
context, then runs what `generate` runs (the same loading, greedy decoding through a `Session`,
speculative with a draft, a fixed draft length) on a made-up prompt filling that context, and
prints the plan's numbers beside MLX's peak memory (`mx.get_peak_memory`, after loading and at the
end) and the process's peak RSS.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/plan_accuracy.py \
        --model M [--draft D] --context 1024 [--keep-quantized] [--max-tokens 8] [--kv-bits 4]
    python benchmarks/plan_accuracy.py --make-model OUT --layers 4 [--bits 4]   # a 7B-width random checkpoint
    python benchmarks/plan_accuracy.py --make-model D --layers 2 --hidden 1024 --heads 8 --intermediate 2816 --bits 4
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401  (puts tests/ on the path)
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint  # noqa: E402

from mlxspec.convert.converter import convert  # noqa: E402
from mlxspec.engine import Session  # noqa: E402
from mlxspec.models import ModelArgs  # noqa: E402
from mlxspec.plan import FitRequest, plan_named, read_named  # noqa: E402
from mlxspec.selection import dequantize_default, select_models  # noqa: E402

GB = 1e9


def llama_shape(layers: int, hidden: int = 4096, heads: int = 32, kv_heads: int = 8,
                intermediate: int = 14336) -> ModelArgs:
    """A Llama of Mistral-7B's widths by default (4096 hidden, 32 heads, 8 KV heads, 14336 MLP,
    no window) with `layers` blocks; narrower for a draft."""
    return ModelArgs(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate,
                     num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=32000, rope_theta=10000.0,
                     max_position_embeddings=32768, model_type="llama")


def make_model(out: Path, args: ModelArgs, bits: int | None) -> None:
    """A random checkpoint of `args` (float16), quantized with `bits` by `mlxspec convert`."""
    if bits is None:
        write_random_hf_checkpoint(out, args, dtype="float16", shard_bytes=2 * 1024**3,
                                   tokenizer_file=mistral_tokenizer_file())
        return
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        write_random_hf_checkpoint(Path(tmp) / "src", args, dtype="float16", shard_bytes=2 * 1024**3,
                                   tokenizer_file=mistral_tokenizer_file())
        convert(str(Path(tmp) / "src"), str(out), bits=bits, group_size=64)


def measure(model: str, draft: str | None, context: int, max_tokens: int, dequantize: bool, k: int,
            kv_bits: int | None = None) -> dict:
    """Peak MLX memory after loading and after generating, and peak RSS, in bytes."""
    mx.reset_peak_memory()
    target, tokenizer, drafted = select_models(model, draft, None, False, dequantize)
    loaded = mx.get_peak_memory()
    session = Session(target, None, drafted, num_draft_tokens=k, draft_policy="fixed", kv_bits=kv_bits)
    prompt = [(7 * i + 3) % target.args.vocab_size for i in range(context - max_tokens)]
    for _ in session.stream(prompt, max_tokens=max_tokens, temperature=0.0, prefill_chunk=None):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # a request resets MLX's peak when it starts (its stats report its own): the run's peak is the larger
    generating = mx.get_peak_memory()
    return {"after load": loaded, "generating": generating, "peak": max(loaded, generating), "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model"), parser.add_argument("--draft")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--keep-quantized", action="store_true")
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--kv-bits", type=int, help="a quantized KV cache (4 or 8 bits, groups of 64)")
    parser.add_argument("--make-model", type=Path), parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--bits", type=int), parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=32), parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=14336)
    a = parser.parse_args()
    if a.make_model is not None:
        return make_model(a.make_model, llama_shape(a.layers, a.hidden, a.heads, a.kv_heads, a.intermediate), a.bits)
    dequantize = dequantize_default(False if a.keep_quantized else None)
    request = FitRequest(context=a.context, dequantize=dequantize, draft_tokens=a.k, kv_bits=a.kv_bits)
    plan = plan_named(read_named(a.model, a.draft, None), request)
    got = measure(a.model, a.draft, a.context, a.max_tokens, dequantize, a.k, a.kv_bits)
    weights = plan.target_fp.weights_loaded + (plan.draft_fp.weights_loaded if plan.draft_fp else 0)
    kv = plan.target_fp.kv_cache + (plan.draft_fp.kv_cache if plan.draft_fp else 0)
    print(f"model {a.model}, draft {a.draft}, context {a.context}, weights "
          f"{'float32' if dequantize else 'as stored'}, k={a.k}, KV {a.kv_bits or 'float'}")
    print(f"plan: weights {weights / GB:.3f} GB, KV {kv / GB:.3f} GB, activations {plan.activations / GB:.3f} GB, "
          f"total {plan.total / GB:.3f} GB")
    print(f"measured: after load {got['after load'] / GB:.3f} GB, generating {got['generating'] / GB:.3f} GB, peak {got['peak'] / GB:.3f} GB, "
          f"peak RSS {got['rss'] / GB:.3f} GB")
    print(f"plan / measured peak: {plan.total / got['peak']:.3f}")


if __name__ == "__main__":
    main()
