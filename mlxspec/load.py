"""Reading a model folder: mlxspec's/mlx-lm's MLX layout (quantized or not), HF
safetensors checkpoints and Mistral's `params.json` + `consolidated.safetensors`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .adapters import apply_adapter, read_adapter
from .drafts import KINDS, Draft
from .drafts.pairing import PAIR_KINDS, PAIR_VERSION, SAME_VOCABULARY, pair_draft
from .convert.safetensors_io import SafetensorsReader
from .errors import CheckpointError, ConfigError, InputError, InputTypeError
from .hub import resolve
from .layout import check_layer_count, check_optional_parts, group_experts
from .load_mlx_lm import known_to_mlx_lm, load_mlx_lm_model, unknown_architecture
from .models import ForeignModel, Model, is_model
from .models.config import port_supports
from .models.families import FAMILIES
from .models.families.mistral import consolidated_to_hf_name
from .models.config import load_model_args, read_json
from .standard_streams import reopen_closed_descriptors
from .text import Tokenizer, load_tokenizer
from .validate import is_int

_IGNORED_KEYS = re.compile(r"rotary_emb\.inv_freq$")


def weight_files(model_dir: Path) -> tuple[list[Path], bool]:
    """The safetensors files holding the weights, and whether they use Mistral's names."""
    hf = sorted(p for p in model_dir.glob("*.safetensors") if not p.name.startswith("consolidated"))
    if (model_dir / "config.json").is_file() and hf:
        return hf, False
    mistral = sorted(model_dir.glob("consolidated*.safetensors"))
    if (model_dir / "params.json").is_file() and mistral:
        return mistral, True
    if list(model_dir.glob("pytorch_model*.bin")) or list(model_dir.glob("consolidated*.pth")):
        raise CheckpointError(
            f"{model_dir}: only PyTorch pickles found; convert them first with `mlxspec convert`"
        )
    raise CheckpointError(f"{model_dir}: no *.safetensors weights found")


def read_weights(files: list[Path], mistral_names: bool) -> dict[str, mx.array]:
    """Load every tensor of `files` (lazily), renamed to mlxspec's module names. Each header
    is validated first, so a shape or offset the file cannot hold never reaches MLX."""
    reopen_closed_descriptors()  # else a file may open as descriptor 0, which MLX reads as stdin
    weights: dict[str, mx.array] = {}
    for file in files:
        SafetensorsReader(file)  # raises CheckpointError naming the file and what is wrong
        try:
            tensors = mx.load(str(file))
        except Exception as exc:  # MLX raises bare RuntimeError/ValueError for bad files
            raise CheckpointError(f"{file}: unreadable safetensors file ({exc})") from None
        for name, tensor in tensors.items():
            if mistral_names:
                new = consolidated_to_hf_name(name)
                if new is None:
                    raise CheckpointError(f"{file}: unexpected tensor {name!r}")
                name = new
            weights[name] = tensor
    return stack_experts(weights, files[0].parent)


def stack_experts(weights: dict[str, mx.array], where: Path) -> dict[str, mx.array]:
    """A Mixtral checkpoint's per-expert matrices (HF's and Mistral's layouts) stacked into
    one [E, out, in] tensor per layer and matrix, as the model holds them."""
    for stacked, names in group_experts(weights, where).items():
        shapes = {tuple(weights[n].shape) for n in names}
        if len(shapes) > 1:
            raise CheckpointError(f"{where}: the experts of {stacked!r} differ in shape ({sorted(shapes)})")
        weights[stacked] = mx.stack([weights.pop(n) for n in names])
    return weights


def _quantize_skeleton(model: Model, quant: dict[str, Any], weights: dict[str, mx.array]) -> None:
    """Turn the layers that the checkpoint stores quantized into quantized layers (mlx-lm's
    `quantization` block: defaults plus optional per-layer overrides)."""

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        if f"{path}.scales" not in weights:
            return False
        override = quant.get(path)
        return override if isinstance(override, dict) else True

    nn.quantize(
        model, group_size=quant.get("group_size", 64), bits=quant.get("bits", 4),
        mode=quant.get("mode", "affine"), class_predicate=predicate,
    )


def check_weights(model: Model, weights: dict[str, mx.array], where: Path) -> None:
    """Raise `CheckpointError` naming the first missing, unexpected or mis-shaped tensor."""
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError(f"{where}: missing tensor {missing[0]!r} ({len(missing)} missing)")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise CheckpointError(f"{where}: unexpected tensor {unexpected[0]!r}")
    for name, param in expected.items():
        if weights[name].shape != param.shape:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {tuple(weights[name].shape)}, "
                f"config implies {tuple(param.shape)}"
            )


def dequantize_weights(weights: dict[str, mx.array], quant: dict[str, Any]) -> dict[str, mx.array]:
    """Replace every (weight, scales, biases) triple by the float matrix it encodes."""
    out = {}
    for name, value in weights.items():
        base = name[: -len(".weight")] if name.endswith(".weight") else None
        if name.endswith((".scales", ".biases")) and f"{name.rsplit('.', 1)[0]}.weight" in weights:
            continue
        if base is not None and f"{base}.scales" in weights:
            layer = quant.get(base) if isinstance(quant.get(base), dict) else quant
            biases = weights.get(f"{base}.biases")
            value = mx.dequantize(value, weights[f"{base}.scales"].astype(mx.float32),
                                  None if biases is None else biases.astype(mx.float32),
                                  group_size=layer.get("group_size", quant.get("group_size", 64)),
                                  bits=layer.get("bits", quant.get("bits", 4)))
            mx.eval(value)  # one matrix at a time: expanding them all in one graph held ~2x their size at once
        out[name] = value
    return out


_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def as_dtype(dtype: mx.Dtype | str | None) -> mx.Dtype | None:
    """An MLX floating dtype, also from its name ("float32", "float16", "bfloat16")."""
    if dtype is None or (isinstance(dtype, mx.Dtype) and dtype in _DTYPES.values()):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise InputTypeError(f"dtype must be one of mx.float32, mx.float16, mx.bfloat16 (or their names), got {dtype!r}")


def load_model(model_dir: Path, dtype: mx.Dtype | None = None, dequantize: bool = False) -> Model | ForeignModel:
    """Build the model that `model_dir` describes and load its weights: the port's blocks for
    its architectures, mlx-lm's model classes for any other (a `ForeignModel`).

    `dtype` casts floating-point weights (e.g. `mx.float32` on CPU backends where
    half-precision matmuls are slow). `dequantize` expands quantized matrices into plain
    ones (in `dtype`): more memory, but on MLX's CPU backend much faster than quantized matmuls."""
    config = read_json(model_dir / "config.json") if (model_dir / "config.json").is_file() else None
    if config is not None and not port_supports(config):
        return load_other_architecture(model_dir, config, dtype, dequantize)
    return _load_module(model_dir, Model, dtype, dequantize)


def _load_module(model_dir: Path, build, dtype: mx.Dtype | None, dequantize: bool, select=None):
    """`build(args)` for the folder's config, with its weights loaded (see `load_model`).
    `select(weights, args) -> (weights, args)`, if given, picks the part of a checkpoint to
    load (a pipeline rank's share) once the whole has been checked; nothing else is read."""
    dtype = as_dtype(dtype)
    args = load_model_args(model_dir)
    files, mistral_names = weight_files(model_dir)
    weights = read_weights(files, mistral_names)
    weights = {k: v for k, v in weights.items() if not _IGNORED_KEYS.search(k)}
    check_layer_count(weights, args.num_hidden_layers, model_dir)
    check_optional_parts(weights, args, model_dir)
    if args.tie_word_embeddings:
        weights.pop("lm_head.weight", None)
    if select is not None:
        weights, args = select(weights, args)
    if dequantize and args.quantization:
        weights = dequantize_weights(weights, args.quantization)
        args.quantization = None
    model = build(args)
    if args.quantization:
        _quantize_skeleton(model, args.quantization, weights)
    check_weights(model, weights, model_dir)
    if dtype is not None:
        weights = {
            k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()
        }
    model.load_weights(list(weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model


def load(path_or_repo_id: str | Path, dtype: mx.Dtype | None = None, dequantize: bool = False,
         adapter: str | Path | None = None) -> tuple[Model, Tokenizer]:
    """Load a model and its tokenizer from a folder or a Hugging Face repo id.

    Reads the MLX layout written by `mlxspec convert` or mlx-lm (quantized or not), HF
    safetensors checkpoints and Mistral's `params.json` + `consolidated.safetensors`.
    See `load_model` for `dtype` and `dequantize`. `adapter`: an mlx-lm LoRA/DoRA/full
    adapter folder (`mlx_lm.lora`'s output) applied to the model (`mlxspec.adapters`)."""
    checked = None if adapter is None else read_adapter(adapter)  # before anything heavy is read
    model_dir = resolve(path_or_repo_id)
    model = load_model(model_dir, dtype=dtype, dequantize=dequantize)
    if checked is not None:  # a Mistral-layout folder keeps q/k rows interleaved; adapters come from its HF twin
        apply_adapter(model, checked, interleaved_qk=weight_files(model_dir)[1])
    return model, model_tokenizer(model_dir, model)


def load_other_architecture(model_dir: Path, config: dict[str, Any], dtype: mx.Dtype | None,
                            dequantize: bool) -> ForeignModel:
    """A model of an architecture outside the port, through mlx-lm (`load_mlx_lm`); one line
    when mlx-lm does not know it either."""
    if not known_to_mlx_lm(config):
        raise unknown_architecture(model_dir, config.get("model_type"), tuple(FAMILIES))
    try:
        return load_mlx_lm_model(model_dir, config, as_dtype(dtype), dequantize)
    except CheckpointError as exc:
        if config.get("model_type") not in FAMILIES:
            raise
        try:  # an architecture of the port with a setting it refuses: say that first
            load_model_args(model_dir)
        except ConfigError as refused:
            raise ConfigError(f"{refused}; nor can mlx-lm load it ({str(exc).split(': ', 1)[-1]})") from None
        raise


def model_tokenizer(model_dir: Path, model: Model) -> Tokenizer:
    """The tokenizer stored with `model`, checked: no more tokens than embedding rows."""
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.vocab_size > model.args.vocab_size:
        raise ConfigError(
            f"{model_dir}: tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{model.args.vocab_size}"
        )
    return tokenizer


def load_draft(path_or_repo_id: str | Path, target: Model, tokenizer: Tokenizer, dtype: mx.Dtype | None = None,
               dequantize: bool = False) -> Draft:
    """Load a draft for `target`: a model of its own (with the target's vocabulary, or
    another: then an `OtherVocabularyDraft`), or a draft of the kind its config.json's
    `"draft_type"` names (`"eagle"`: a feature draft, which reads the target's hidden states).
    Raises `InputError` when it cannot draft for this target."""
    if not is_model(target) or not isinstance(tokenizer, (Tokenizer, type(None))):
        raise InputTypeError("load_draft(path, target, tokenizer) needs the loaded target and its tokenizer "
                             "(target, tokenizer = mlxspec.load(path))")
    folder = resolve(path_or_repo_id)
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    kind = config.get("draft_type")
    if kind is None:
        if tokenizer is None:
            raise InputError("a draft model is checked against the target's tokenizer: pass it")
        return pair_draft((target, tokenizer), load(folder, dtype=dtype, dequantize=dequantize))
    draft = _load_module(folder, KINDS.folder_module(kind, str(folder)), dtype, dequantize)
    try:
        draft.check(target, 1)
    except InputError as exc:
        raise InputError(f"{folder}: {exc}") from None
    return draft


def read_pair_manifest(pair_dir: Path) -> dict[str, Any]:
    """pair.json of a pair folder, checked: the two roles name sub-folders, the kind is one
    this mlxspec runs (manifests written before kinds were recorded are same-vocabulary)."""
    path = pair_dir / "pair.json"
    if not path.is_file():
        raise ConfigError(f"{pair_dir}: no pair.json (write one with `mlxspec convert --target T --draft D -o {pair_dir}`)")
    manifest = read_json(path)
    if manifest.get("format", "mlxspec-pair") != "mlxspec-pair":
        raise ConfigError(f"{path}: not an mlxspec pair manifest (format {manifest.get('format')!r})")
    if not is_int(manifest.get("version", 1)) or manifest.get("version", 1) > PAIR_VERSION:
        raise ConfigError(f"{path}: written by a newer mlxspec (pair version {manifest.get('version')!r}; "
                          f"this one reads up to {PAIR_VERSION})")
    for role in ("target", "draft"):
        value = manifest.get(role)
        if not isinstance(value, str) or not value or Path(value).is_absolute() or ".." in Path(value).parts:
            raise ConfigError(f"{path}: {role!r} must name a folder inside {pair_dir}, got {value!r}")
    kind = manifest.setdefault("kind", SAME_VOCABULARY)
    if kind not in PAIR_KINDS:
        raise ConfigError(f"{path}: pair kind {kind!r} is not one this mlxspec runs ({', '.join(PAIR_KINDS)})")
    return manifest


def load_pair(pair_dir: str | Path, dtype: mx.Dtype | None = None, dequantize: bool = False,
              adapter: str | Path | None = None) -> tuple[Model, Tokenizer, Draft]:
    """Load a pair written by `mlxspec convert --target ... --draft ...`: (target, tokenizer,
    draft); `adapter` applies to the target only (see `load`)."""
    if not isinstance(pair_dir, (str, Path)):
        raise InputTypeError(f"pair_dir must be a folder path, got {type(pair_dir).__name__}")
    folder = Path(pair_dir).expanduser()
    manifest = read_pair_manifest(folder)
    target, tokenizer = load(folder / manifest["target"], dtype=dtype, dequantize=dequantize, adapter=adapter)
    draft = load_draft(folder / manifest["draft"], target, tokenizer, dtype=dtype, dequantize=dequantize)
    return target, tokenizer, draft
