"""Random-weight checkpoints written in the real on-disk layouts (HF `config.json` +
safetensors, Mistral `params.json` + `consolidated.safetensors`), one tensor at a time.

They feed the tests and the benchmarks through exactly the code paths a downloaded
checkpoint takes, with the real Mistral-7B tokenizer from `mistral-common`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import numpy as np

from mlxspec.convert.safetensors_io import ShardedWriter
from mlxspec.errors import MlxspecError
from mlxspec.layout import hf_tensor_shapes, permute_half_to_interleaved
from mlxspec.models.families.mistral import consolidated_to_hf_name
from mlxspec.models import ModelArgs


def mistral_tokenizer_file() -> Path:
    """The Mistral-7B SentencePiece model shipped inside the `mistral-common` package."""
    from importlib import resources

    try:
        data = resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    except ModuleNotFoundError:
        raise MlxspecError("synthetic checkpoints need mistral-common: pip install 'mlxspec[test]'") from None
    return Path(str(data))


def random_tensor(rng: np.random.Generator, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Norm weights near 1, other weights ~N(0, 1/fan_in) so activations stay O(1)."""
    if name.endswith("norm.weight"):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(dtype)
    scale = 1.0 if "embed_tokens" in name else shape[-1] ** -0.5
    return (scale * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)


def write_random_hf_checkpoint(
    out: Path, args: ModelArgs, seed: int = 0, dtype: str = "float32",
    tokenizer_file: Path | None = None, shard_bytes: int | None = None,
) -> Path:
    """Write `config.json` + `model.safetensors` (or shards + index) with random weights,
    one tensor in memory at a time (so a 7B-shaped checkpoint fits in little RAM)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = ShardedWriter(out, shard_bytes or 2**62, metadata={"format": "pt"},
                           max_tensors=len(list(hf_tensor_shapes(args))))
    for name, shape in hf_tensor_shapes(args):
        writer.add(name, random_tensor(rng, name, shape, dtype))
    writer.finish()
    config = args.to_hf_config()
    config.update(torch_dtype=dtype, bos_token_id=1, eos_token_id=2)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer_file is not None:
        shutil.copy(tokenizer_file, out / "tokenizer.model")
        # what Mistral's Hub repos carry beside tokenizer.model, so transformers/mlx-lm load it too
        (out / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": True,
        }, indent=2))
    return out


def write_mistral_checkpoint_from_hf(hf_dir: Path, out: Path, args: ModelArgs) -> Path:
    """Re-save an HF-layout checkpoint in Mistral's layout: `params.json`, Mistral names and
    q/k rows in the interleaved RoPE order (the inverse of the HF conversion permutation)."""
    out.mkdir(parents=True, exist_ok=True)
    to_mistral = {}
    weights = {}
    for file in sorted(hf_dir.glob("model*.safetensors")):
        weights.update(mx.load(str(file)))
    names = {consolidated_to_hf_name(n): n for n in _mistral_names(args)}
    for hf_name, tensor in weights.items():
        if hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = args.num_attention_heads if "q_proj" in hf_name else args.num_key_value_heads
            tensor = mx.array(permute_half_to_interleaved(np.array(tensor), heads))
        to_mistral[names[hf_name]] = tensor
    mx.save_safetensors(str(out / "consolidated.safetensors"), to_mistral)
    params = {
        "dim": args.hidden_size, "n_layers": args.num_hidden_layers, "hidden_dim": args.intermediate_size,
        "n_heads": args.num_attention_heads, "n_kv_heads": args.num_key_value_heads, "head_dim": args.head_dim,
        "norm_eps": args.rms_norm_eps, "vocab_size": args.vocab_size, "rope_theta": args.rope_theta,
    }
    if args.sliding_window is not None:
        params["sliding_window"] = args.sliding_window
    (out / "params.json").write_text(json.dumps(params, indent=2))
    for tok in hf_dir.glob("tokenizer.model*"):
        shutil.copy(tok, out / tok.name)
    return out


def _mistral_names(args: ModelArgs) -> Iterator[str]:
    yield from ("tok_embeddings.weight", "norm.weight", "output.weight")
    modules = ("attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1",
               "feed_forward.w2", "feed_forward.w3", "attention_norm", "ffn_norm")
    for i in range(args.num_hidden_layers):
        yield from (f"layers.{i}.{m}.weight" for m in modules)

