"""The converter: source checkpoint -> mlx-lm layout, one tensor at a time.

Each tensor is read, cast and (for projection and embedding matrices) quantized, then
streamed into bounded shards, so peak memory is about one full-precision tensor
whatever the model size. The output folder is written atomically."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from mlxspec.errors import CheckpointError, ConfigError, InputError, InputTypeError, OutputError
from mlxspec.hub import resolve
from mlxspec.paths import user_path
from mlxspec.validate import is_int
from mlxspec.text import Tokenizer, load_tokenizer

from mlxspec.adapters import read_adapter

from .adapter_fusion import fold_adapter
from .atomic import atomic_dir, check_writable
from .other_architecture import other_architecture
from .kquants import REQUANTIZATION_BOUND, REQUANTIZED, requantize
from .safetensors_io import ShardedWriter
from .sources import Source, TensorRef, open_source

BITS = (2, 3, 4, 6, 8)
GROUP_SIZES = (32, 64, 128)
DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
Progress = Callable[[int, int, str], None]  # (bytes done so far, total bytes, tensor just written)


class RequantizationWarning(UserWarning):
    """GGUF tensors re-quantized because MLX has no exact form for their blocks (Q6_K)."""


def resolve_source(src: str | Path, revision: str | None = None) -> Path:
    """A local folder or GGUF file, or a Hugging Face repo id fetched with only the needed files."""
    path = user_path(src, "source")
    if path.suffix.lower() == ".gguf":
        if path.is_dir():
            raise InputError(f"{path} is a folder; a GGUF source is one .gguf file")
        if not path.exists():
            raise InputError(f"{path}: no such GGUF file")
        if not path.is_file():
            raise InputError(f"{path} is not a regular file; a GGUF source is one .gguf file")
        if revision is not None:
            raise InputError(f"--revision applies to Hub repo ids; {path} is on this disk")
        return path

    return resolve(src, revision=revision)


def source_tokenizer(source: Source) -> Tokenizer | None:
    """The tokenizer the converted `source` will carry (None when it has none): the files
    beside the weights, or those rebuilt from GGUF metadata (read back through a temporary
    folder); checked against the embeddings (more tokens than rows cannot run)."""
    if source.generated_files:
        try:
            with tempfile.TemporaryDirectory() as folder:
                for name, text in source.generated_files.items():
                    (Path(folder) / name).write_text(text)
                tokenizer = load_tokenizer(Path(folder))
        except OSError as exc:
            raise OutputError(f"cannot check the tokenizer of {source.root} in a temporary folder "
                              f"({exc.filename}: {exc.strerror})") from None
    elif source.tokenizer_files:
        tokenizer = load_tokenizer(source.root)
    else:
        return None
    if tokenizer.vocab_size > source.args.vocab_size:
        raise ConfigError(f"{source.root}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                          f"only {source.args.vocab_size} embedding rows")
    return tokenizer


def quantizable(name: str) -> bool:
    """Matrices that become `QuantizedLinear` / `QuantizedEmbedding` (mlx-lm's choice)."""
    return name.endswith(("_proj.weight", "embed_tokens.weight", "lm_head.weight"))


def check_options(bits: int | None, group_size: int, dtype: str | None, max_shard_bytes: int = 1,
                  bits_option: str = "--bits", progress: object = None) -> None:
    """Every conversion option, typed and in range, before any file is opened."""
    for name, value in (("bits", bits), ("group_size", group_size), ("max_shard_bytes", max_shard_bytes)):
        if (value is not None or name != "bits") and not is_int(value):
            raise InputTypeError(f"{name} must be an integer, got {value!r}")
    if max_shard_bytes <= 0:
        raise InputError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    if bits is not None and bits not in BITS:
        raise InputError(f"{bits_option} must be one of {', '.join(map(str, BITS))}, got {bits}")
    if group_size not in GROUP_SIZES:
        raise InputError(f"--group-size must be one of {', '.join(map(str, GROUP_SIZES))}, got {group_size}")
    if dtype is not None and (not isinstance(dtype, str) or dtype not in DTYPES):
        raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if progress is not None and not (callable(progress) or isinstance(progress, dict)):
        raise InputTypeError(f"progress must be a callable (done, total, name), got {type(progress).__name__}")


def check_paths(**paths: object) -> None:
    """Sources and outputs are paths (or, for sources, Hub repo ids)."""
    for name, value in paths.items():
        if not isinstance(value, (str, Path)):
            raise InputTypeError(f"{name} must be a path (or a Hub repo id), got {type(value).__name__}")
        if isinstance(value, str) and not value.strip():
            raise InputError(f"the {name} path is empty")


def keeps_quantization(ref: TensorRef, bits: int | None, dtype: mx.Dtype | None) -> bool:
    """A tensor stored quantized (GGUF) is copied as it is unless --bits or --dtype asks otherwise."""
    return ref.quant is not None and bits is None and dtype is None


def convert_tensor(ref: TensorRef, bits: int | None, group_size: int, dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """The output tensors for one input tensor: cast, and quantized where it applies."""
    if keeps_quantization(ref, bits, dtype) and ref.load_packed is not None:
        base = ref.name[: -len(".weight")]
        weight, scales, biases = ref.load_packed()
        return {f"{base}.weight": weight, f"{base}.scales": scales, f"{base}.biases": biases}
    if ref.parts is not None:
        return _convert_experts(ref, bits, group_size, dtype)
    arr = ref.load()
    if ref.quant is not None and dtype is None:
        dtype = mx.float16  # dequantized from GGUF blocks: half precision unless --dtype says otherwise
    if dtype is not None and mx.issubdtype(arr.dtype, mx.floating):
        arr = arr.astype(dtype)
    if bits is None or not quantizable(ref.name):
        return {ref.name: arr}
    weight, scales, biases = mx.quantize(arr, group_size=group_size, bits=bits)
    base = ref.name[: -len(".weight")]
    return {f"{base}.weight": weight, f"{base}.scales": scales, f"{base}.biases": biases}


def _convert_experts(ref: TensorRef, bits: int | None, group_size: int, dtype: mx.Dtype | None) -> dict[str, mx.array]:
    """A stacked experts tensor converted expert by expert (each cast and quantized, then
    evaluated, before the next is read), so one expert is held at full precision, not E."""
    base = ref.name[: -len(".weight")]
    pieces: list[tuple[mx.array, ...]] = []
    for load in ref.parts:
        arr = load()
        if dtype is not None:
            arr = arr.astype(dtype)
        piece = tuple(mx.quantize(arr, group_size=group_size, bits=bits)) if bits is not None else (arr,)
        mx.eval(piece)
        pieces.append(piece)
    if bits is None:
        return {ref.name: mx.stack([p[0] for p in pieces])}
    return {f"{base}.{kind}": mx.stack([p[i] for p in pieces]) for i, kind in enumerate(("weight", "scales", "biases"))}


def check_group_size(source: Source, bits: int | None, group_size: int) -> None:
    """Before writing anything: every matrix to quantize must split into whole groups."""
    if bits is None:
        return
    for ref in source.tensors:
        if quantizable(ref.name) and ref.shape[-1] % group_size:
            raise CheckpointError(
                f"{ref.where}: tensor {ref.name!r} has {ref.shape[-1]} columns, not divisible by group size {group_size}"
            )


def output_config(source: Source, bits: int | None, group_size: int,
                  dtype: mx.Dtype | None = None) -> dict[str, Any]:
    """The input's config updated for what was written (mlx-lm reads the same keys).

    Quantization kept from a GGUF file is recorded per layer where it differs from the
    most common (bits, group size), as mlx-lm's per-layer `quantization` entries."""
    config = dict(source.config)
    config.update(source.args.to_hf_config())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    quant: dict[str, Any] | None = None
    if bits is not None:
        quant = {"group_size": group_size, "bits": bits, "mode": "affine"}
    else:
        kept = {ref.name[: -len(".weight")]: ref.quant for ref in source.tensors
                if ref.quant is not None and keeps_quantization(ref, bits, dtype)}
        if kept:
            values = list(kept.values())
            common = max(set(values), key=values.count)
            quant = {"group_size": common[1], "bits": common[0], "mode": "affine"}
            for path, (b, g) in kept.items():
                if (b, g) != common:
                    quant[path] = {"group_size": g, "bits": b}
    if quant is not None:
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
    adapter: str | Path | None = None,
) -> Path:
    """Convert a checkpoint (local folder or Hub repo id) into MLX weights at `out`.

    `bits` quantizes projection and embedding matrices (affine, `group_size` columns per
    scale); without it weights are written unquantized in `dtype` (default: as stored).
    `out` appears complete or not at all; an existing `out` needs `force`, which replaces
    only a folder mlxspec wrote (never a source or a folder holding one). `adapter`, an
    mlx-lm adapter folder, is folded into the weights first (`adapter_fusion`, as
    `mlx_lm.fuse`); tensors stored quantized that it changes are quantized again."""
    check_options(bits, group_size, dtype, max_shard_bytes, progress=progress)
    check_paths(src=src, out=out)
    checked = None if adapter is None else read_adapter(adapter)
    out = Path(out)
    check_writable(out, force, sources=[src, *([checked.folder] if checked else [])], kind="model")
    root = resolve_source(src, revision)
    target_dtype = DTYPES[dtype] if dtype else None
    other = other_architecture(root)
    if other is not None:  # mlx-lm's model class writes it
        other.tokenizer()  # a tokenizer that cannot be read is one line before anything is written
        with atomic_dir(out, force, sources=[root]) as tmp:
            other.write(tmp, bits, group_size, target_dtype, checked)
        return out
    source = open_source(root)
    source_tokenizer(source)
    if checked is not None:
        source = fold_adapter(source, checked)
    with atomic_dir(out, force, sources=[root]) as tmp:
        write_model(source, tmp, bits, group_size, target_dtype, max_shard_bytes, progress)
    return out


def write_model(source: Source, folder: Path, bits: int | None, group_size: int, dtype: mx.Dtype | None,
                max_shard_bytes: int, progress: Progress | None = None) -> dict[str, float]:
    """Stream every tensor of `source` into `folder`, then the config and tokenizer files;
    return the errors of the tensors re-quantized (see `report_requantized`)."""
    check_group_size(source, bits, group_size)
    writer = ShardedWriter(folder, max_shard_bytes, max_tensors=3 * len(source.tensors))
    done, total = 0, source.total_bytes
    previous: tuple[TensorRef, dict[str, mx.array]] | None = None
    errors: dict[str, mx.array] = {}
    for ref in [*source.tensors, None]:
        if ref is not None:  # start converting this tensor while the previous one is written
            if keeps_quantization(ref, bits, dtype) and ref.load_packed is None:
                converted, errors[ref.name] = requantized_tensors(ref)
            else:
                converted = convert_tensor(ref, bits, group_size, dtype)
            mx.async_eval([*converted.values(), *errors.values()])
        if previous is not None:
            for name, arr in previous[1].items():
                writer.add(name, arr)
            done += previous[0].nbytes
            if progress is not None:
                progress(done, total, previous[0].name)
        previous = (ref, converted) if ref is not None else None
    writer.finish()
    (folder / "config.json").write_text(json.dumps(output_config(source, bits, group_size, dtype), indent=2))
    for file in source.tokenizer_files:
        shutil.copy(file, folder / file.name)
    for name, text in source.generated_files.items():
        (folder / name).write_text(text)
    return report_requantized(source, errors)


def requantized_tensors(ref: TensorRef) -> tuple[dict[str, mx.array], mx.array]:
    """A tensor with no exact MLX form (Q6_K) re-quantized to `ref.quant`, and the error made."""
    (weight, scales, biases), error = requantize(ref.load(), *ref.quant)
    base = ref.name[: -len(".weight")]
    return {f"{base}.weight": weight, f"{base}.scales": scales, f"{base}.biases": biases}, error


def report_requantized(source: Source, errors: dict[str, mx.array]) -> dict[str, float]:
    """Re-quantization errors by tensor (see `kquants.requantize`), summed up for the user in
    one `RequantizationWarning`: the worst of them."""
    measured = {name: error.item() for name, error in errors.items()}
    if measured:
        worst = max(measured, key=measured.__getitem__)
        bits, group = next(ref.quant for ref in source.tensors if ref.name == worst)
        warnings.warn(f"{source.root}: {len(measured)} {'/'.join(REQUANTIZED)} tensors re-quantized to {bits} bits "
                      f"in groups of {group} (MLX has no groups of 16): worst error {measured[worst]:.2%} of a "
                      f"tensor's largest weight ({worst}), under the {REQUANTIZATION_BOUND:.0%} bound",
                      RequantizationWarning, stacklevel=3)
    return measured
