"""The converter: source checkpoint -> mlx-lm layout, one tensor at a time.

Each tensor is read, cast and (for projection and embedding matrices) quantized, then
streamed into bounded shards, so peak memory is about one full-precision tensor
whatever the model size. The output folder is written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from mlxspec.errors import CheckpointError, InputError

from .atomic import atomic_dir, check_writable
from .safetensors_io import ShardedWriter
from .sources import Source, TensorRef, open_source

BITS = (2, 3, 4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
Progress = Callable[[int, int, str], None]  # (bytes done so far, total bytes, tensor just written)


def resolve_source(src: str | Path, revision: str | None = None) -> Path:
    """A local folder, or a Hugging Face repo id fetched with only the needed files."""
    from mlxspec.load import resolve

    return resolve(src, revision=revision)


def quantizable(name: str) -> bool:
    """Matrices that become `QuantizedLinear` / `QuantizedEmbedding` (mlx-lm's choice)."""
    return name.endswith(("_proj.weight", "embed_tokens.weight", "lm_head.weight"))


def check_options(bits: int | None, group_size: int, dtype: str | None) -> None:
    if bits is not None and bits not in BITS:
        raise InputError(f"--bits must be one of {', '.join(map(str, BITS))}, got {bits}")
    if group_size not in GROUP_SIZES:
        raise InputError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size}")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype}")


def convert_tensor(ref: TensorRef, bits: int | None, group_size: int, dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """The output tensors for one input tensor: cast, and quantized where it applies."""
    arr = ref.load()
    if dtype is not None and mx.issubdtype(arr.dtype, mx.floating):
        arr = arr.astype(dtype)
    if bits is None or not quantizable(ref.name):
        return {ref.name: arr}
    weight, scales, biases = mx.quantize(arr, group_size=group_size, bits=bits)
    base = ref.name[: -len(".weight")]
    return {f"{base}.weight": weight, f"{base}.scales": scales, f"{base}.biases": biases}


def check_group_size(source: Source, bits: int | None, group_size: int) -> None:
    """Before writing anything: every matrix to quantize must split into whole groups."""
    if bits is None:
        return
    for ref in source.tensors:
        if quantizable(ref.name) and ref.shape[-1] % group_size:
            raise CheckpointError(
                f"{ref.where}: tensor {ref.name!r} has {ref.shape[-1]} columns, not divisible by group size {group_size}"
            )


def output_config(source: Source, bits: int | None, group_size: int) -> dict[str, Any]:
    """The input's config updated for what was written (mlx-lm reads the same keys)."""
    config = dict(source.config)
    config.update(source.args.to_hf_config())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    if bits is not None:
        quant = {"group_size": group_size, "bits": bits, "mode": "affine"}
        config["quantization"] = quant
        config["quantization_config"] = dict(quant)
    return config


def convert(
    src: str | Path,
    out: str | Path,
    bits: int | None = None,
    group_size: int = 64,
    dtype: str | None = None,
    force: bool = False,
    revision: str | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    progress: Progress | None = None,
) -> Path:
    """Convert a checkpoint (local folder or Hub repo id) into MLX weights at `out`.

    `bits` quantizes projection and embedding matrices (affine, `group_size` columns per
    scale); without it weights are written unquantized in `dtype` (default: as stored).
    `out` appears complete or not at all; an existing `out` needs `force`."""
    check_options(bits, group_size, dtype)
    out = Path(out)
    check_writable(out, force)
    source = open_source(resolve_source(src, revision))
    target_dtype = DTYPES[dtype] if dtype else None
    with atomic_dir(out, force) as tmp:
        write_model(source, tmp, bits, group_size, target_dtype, max_shard_bytes, progress)
    return out


def write_model(source: Source, folder: Path, bits: int | None, group_size: int, dtype: mx.Dtype | None,
                max_shard_bytes: int, progress: Progress | None = None) -> None:
    """Stream every tensor of `source` into `folder`, then the config and tokenizer files."""
    check_group_size(source, bits, group_size)
    writer = ShardedWriter(folder, max_shard_bytes, max_tensors=3 * len(source.tensors))
    done, total = 0, source.total_bytes
    previous: tuple[TensorRef, dict[str, mx.array]] | None = None
    for ref in [*source.tensors, None]:
        if ref is not None:  # start converting this tensor while the previous one is written
            converted = convert_tensor(ref, bits, group_size, dtype)
            mx.async_eval(list(converted.values()))
        if previous is not None:
            for name, arr in previous[1].items():
                writer.add(name, arr)
            done += previous[0].nbytes
            if progress is not None:
                progress(done, total, previous[0].name)
        previous = (ref, converted) if ref is not None else None
    writer.finish()
    (folder / "config.json").write_text(json.dumps(output_config(source, bits, group_size), indent=2))
    for file in source.tokenizer_files:
        shutil.copy(file, folder / file.name)
