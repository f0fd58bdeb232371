"""Checkpoint readers: every supported input layout becomes one `Source` — a config and
a list of tensors under mlxspec's (HF) names, each loaded only when asked for.

Layouts: HF (`config.json` + `model.safetensors`, sharded with an index, or
`pytorch_model*.bin` when torch is installed), Mistral's (`params.json` +
`consolidated.safetensors` or `consolidated.00.pth`) and single GGUF files. Mistral's and
llama.cpp's q/k rows are permuted to the rotate-half layout here, so every output is an
ordinary HF-layout model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from mlxspec.errors import CheckpointError, ConfigError, TokenizerError
from mlxspec.layout import (check_layer_count, check_optional_parts, group_experts, hf_tensor_shapes,
                            permute_interleaved_to_half)
from mlxspec.models.config import ModelArgs, load_model_args, read_json
from mlxspec.models.families.mistral import consolidated_to_hf_name
from mlxspec.reading import TOKENIZER_LIMIT, regular_file

from . import gguf as gguf_format
from .gguf_config import model_args
from .ggml_types import QUANT_FORMATS
from .gguf_tokenizer import tokenizer_files_from_gguf
from .kquants import REQUANTIZED
from .safetensors_io import SafetensorsReader


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json", "tokenizer.model")
_IGNORED = ("rotary_emb.inv_freq",)


@dataclass
class TensorRef:
    """One input tensor: its HF name, shape, where it lives and how to load it."""

    name: str
    shape: tuple[int, ...]
    nbytes: int
    where: Path
    load: Callable[[], mx.array]
    # Tensors stored quantized (GGUF): (bits, group size) and a loader of the packed
    # (weight, scales, biases) in MLX's affine format; `load` then dequantizes. Without
    # `load_packed` (Q6_K: no exact MLX form), the converter re-quantizes `load()` to `quant`.
    quant: tuple[int, int] | None = None
    load_packed: Callable[[], tuple[mx.array, mx.array, mx.array]] | None = None
    # Experts stacked from one tensor per expert: a loader per expert, so the converter
    # can cast and quantize them one at a time (`load` stacks them all).
    parts: list[Callable[[], mx.array]] | None = None


@dataclass
class Source:
    """A checkpoint ready to convert."""

    root: Path
    args: ModelArgs
    config: dict[str, Any]
    tensors: list[TensorRef]
    tokenizer_files: list[Path] = field(default_factory=list)
    generated_files: dict[str, str] = field(default_factory=dict)  # file name -> text (GGUF tokenizer)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def open_source(root: Path) -> Source:
    """Read the layout of `root` (headers only; no tensor data is loaded)."""
    if root.is_file() and root.suffix.lower() == ".gguf":
        return _gguf_source(root)
    args = load_model_args(root)
    if args.quantization:
        raise CheckpointError(f"{root}: already quantized; convert from the full-precision checkpoint")
    if (root / "config.json").is_file():
        config = read_json(root / "config.json")
        refs = _hf_tensors(root)
    else:
        config = args.to_hf_config()
        refs = _mistral_tensors(root, args)
        args.rope_traditional = False  # permuted to rotate-half on load
        config["rope_traditional"] = False
    refs = stack_experts([r for r in refs if not r.name.endswith(_IGNORED)], root)
    if args.tie_word_embeddings:
        refs = [r for r in refs if r.name != "lm_head.weight"]
    _check_tensors(refs, args, root)
    tok_files = [root / n for n in TOKENIZER_FILES if (root / n).is_file()]
    tok_files += [p for p in sorted(root.glob("tokenizer.model.*")) if p.is_file()]
    for file in tok_files:  # copied whole by the converter: a sparse giant would never finish
        try:
            regular_file(file, TOKENIZER_LIMIT)
        except OSError as exc:
            raise TokenizerError(f"{file}: {exc.strerror}") from None
    return Source(root, args, config, refs, tok_files)


def _check_tensors(refs: list[TensorRef], args: ModelArgs, root: Path) -> None:
    """Every tensor the config implies, once, with its shape, and nothing else."""
    check_layer_count((r.name for r in refs), args.num_hidden_layers, root)  # before listing what it implies
    check_optional_parts((r.name for r in refs), args, root)
    expected = dict(hf_tensor_shapes(args))
    seen: dict[str, TensorRef] = {}
    for ref in refs:
        if ref.name in seen:
            raise CheckpointError(f"{ref.where}: tensor {ref.name!r} appears twice (also in {seen[ref.name].where})")
        if ref.name not in expected:
            raise CheckpointError(f"{ref.where}: unexpected tensor {ref.name!r} for a {args.model_type} model")
        if ref.shape != expected[ref.name]:
            raise CheckpointError(
                f"{ref.where}: tensor {ref.name!r} has shape {ref.shape}, config implies {expected[ref.name]}"
            )
        seen[ref.name] = ref
    missing = [n for n in expected if n not in seen]
    if missing:
        raise CheckpointError(f"{root}: missing tensor {missing[0]!r} ({len(missing)} missing)")


def stack_experts(refs: list[TensorRef], root: Path) -> list[TensorRef]:
    """A Mixtral's per-expert matrices replaced by one stacked reference per layer and
    matrix ([E, out, in], read expert by expert); every other reference as it was."""
    by_name = {r.name: r for r in refs}
    stacks = group_experts(by_name, root)
    members = {name for names in stacks.values() for name in names}
    out = [r for r in refs if r.name not in members]
    for stacked, names in stacks.items():
        experts = [by_name[n] for n in names]
        if len({e.shape for e in experts}) > 1:
            raise CheckpointError(f"{experts[0].where}: the experts of {stacked!r} differ in shape")
        parts = [e.load for e in experts]
        out.append(TensorRef(stacked, (len(experts), *experts[0].shape), sum(e.nbytes for e in experts),
                             experts[0].where, lambda parts=parts: mx.stack([load() for load in parts]),
                             parts=parts))
    return out


def _safetensors_refs(files: list[Path], rename: Callable[[str, Path], str],
                      transform: Callable[[str, mx.array], mx.array] | None = None) -> list[TensorRef]:
    refs = []
    for file in files:
        reader = SafetensorsReader(file)
        for name in reader.names():
            new = rename(name, file)

            def load(reader=reader, name=name, new=new) -> mx.array:
                arr = reader.read(name)
                return transform(new, arr) if transform else arr

            refs.append(TensorRef(new, reader.shape(name), reader.nbytes(name), file, load))
    return refs


def _hf_tensors(root: Path) -> list[TensorRef]:
    index = root / "model.safetensors.index.json"
    if index.is_file():
        return _safetensors_refs(_index_shards(index), lambda n, f: n)
    files = sorted(p for p in root.glob("*.safetensors") if not p.name.startswith("consolidated"))
    if files:
        return _safetensors_refs(files, lambda n, f: n)
    bins = sorted(root.glob("pytorch_model*.bin"))
    if bins:
        return _torch_refs(bins, lambda n, f: n)
    raise CheckpointError(f"{root}: no model*.safetensors or pytorch_model*.bin weights found")


def _index_shards(index: Path) -> list[Path]:
    """The shards that a `model.safetensors.index.json` names: plain file names beside it."""
    try:
        weight_map = read_json(index).get("weight_map")
    except ConfigError as exc:  # the index belongs to the weights, not to the config
        raise CheckpointError(str(exc)) from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    files = []
    for shard in sorted(set(weight_map.values())):
        if shard in ("", ".", "..") or any(c in shard for c in "/\\\0"):
            raise CheckpointError(f"{index}: shard {shard[:80]!r} is not a file name inside {index.parent}")
        try:
            present = (index.parent / shard).is_file()
        except (OSError, ValueError):  # a name too long, or one the file system cannot encode
            present = False
        if not present:
            raise CheckpointError(f"{index}: lists shard {shard[:80]!r}, which is missing")
        files.append(index.parent / shard)
    return files


def _mistral_tensors(root: Path, args: ModelArgs) -> list[TensorRef]:
    def rename(name: str, file: Path) -> str:
        new = consolidated_to_hf_name(name)
        if new is None:
            raise CheckpointError(f"{file}: unexpected tensor {name!r} in a Mistral checkpoint")
        return new

    def to_rotate_half(name: str, arr: mx.array) -> mx.array:
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = args.num_attention_heads if "q_proj" in name else args.num_key_value_heads
            return permute_interleaved_to_half(arr, heads)
        return arr

    safetensors = sorted(root.glob("consolidated*.safetensors"))
    if safetensors:
        return _safetensors_refs(safetensors, rename, to_rotate_half)
    pth = sorted(root.glob("consolidated*.pth"))
    if len(pth) > 1:
        raise CheckpointError(f"{root}: {len(pth)} model-parallel consolidated.*.pth shards; use the HF layout instead")
    if pth:
        return _torch_refs(pth, rename, to_rotate_half)
    raise CheckpointError(f"{root}: params.json but no consolidated.safetensors or consolidated.00.pth")


def _torch_refs(files: list[Path], rename: Callable[[str, Path], str],
                transform: Callable[[str, mx.array], mx.array] | None = None) -> list[TensorRef]:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{files[0]}: PyTorch pickle checkpoints need torch (pip install torch); "
            "safetensors checkpoints do not"
        ) from None
    refs = []
    for file in files:
        try:
            regular_file(file)  # a pipe would block torch for ever
        except OSError as exc:
            raise CheckpointError(f"{file}: {exc.strerror}") from None
        try:
            state = torch.load(str(file), map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError...
            raise CheckpointError(f"{file}: unreadable PyTorch checkpoint ({type(exc).__name__})") from None
        _check_state_dict(file, state, torch)
        for name, tensor in state.items():
            new = rename(name, file)

            def load(tensor=tensor, new=new) -> mx.array:
                if tensor.dtype == torch.bfloat16:
                    arr = mx.array(tensor.view(torch.uint16).numpy()).view(mx.bfloat16)
                else:
                    arr = mx.array(tensor.numpy())
                return transform(new, arr) if transform else arr

            refs.append(TensorRef(new, tuple(tensor.shape), tensor.numel() * tensor.element_size(), file, load))
    return refs


def _check_state_dict(file: Path, state: Any, torch: Any) -> None:
    """A pickle holds any object: insist on tensor names -> floating-point tensors."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: holds a {type(state).__name__}, not a state dict of named tensors")
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{file}: entry {str(name)[:80]!r} is a {type(tensor).__name__}, not a named tensor")
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise CheckpointError(f"{file}: tensor {name!r} has dtype {tensor.dtype}; float32, float16 and bfloat16 "
                                  "are supported")


def _gguf_source(path: Path) -> Source:
    header = gguf_format.read_header(path)
    args = model_args(header)
    refs = []
    for name, tensor, load in gguf_format.tensor_loaders(header, args):
        if tensor.type_name in QUANT_FORMATS:
            bits, group = QUANT_FORMATS[tensor.type_name]

            def dequantized(load=load, bits=bits, group=group) -> mx.array:
                w, s, b = load()  # expanded in float32: exact for f16 and f32 scales and biases
                return mx.dequantize(w, s.astype(mx.float32), b.astype(mx.float32), group_size=group, bits=bits)

            refs.append(TensorRef(name, tensor.shape, tensor.nbytes, path, dequantized, (bits, group), load))
        else:  # floats, and Q6_K's exact float32 values (re-quantized to REQUANTIZED by the converter)
            refs.append(TensorRef(name, tensor.shape, tensor.nbytes, path, load, REQUANTIZED.get(tensor.type_name)))
    _check_tensors(refs, args, path)
    return Source(path, args, args.to_hf_config(), refs, [], tokenizer_files_from_gguf(header))
