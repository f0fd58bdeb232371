"""The target and draft that a command's model options select: --model [--draft], --pair
or --demo; `--draft NAME` is a kind of draft made by name (prompt lookup), and --lookup
puts prompt lookup in front of a draft model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import mlx.core as mx

from . import demo as demo_pair
from .drafts import KINDS, DraftKind, DraftSettings, as_draft, with_lookup
from .errors import InputError
from .load import load, load_draft, read_pair_manifest
from .models import Model
from .pipeline import load_lead
from .text import Tokenizer


def select_models(model: Optional[str], draft: Optional[str], pair: Optional[str], use_demo: bool,
                  dequantize: bool, settings: DraftSettings = DraftSettings(), combine: bool = False,
                  group: Any = None, adapter: Optional[str] = None) -> tuple[Model, Tokenizer, Optional[DraftKind]]:
    """(target, tokenizer, draft or None) from --model [--draft], --pair or --demo; a draft
    named by a registered kind's name is made with `settings`, and `combine` (--lookup) puts
    prompt lookup in front of a draft model. With a pipeline `group` (on rank 0) the target
    is its part. `adapter` (an mlx-lm adapter folder) applies to the target only."""
    target, tokenizer, loaded = _load_parts(model, draft, pair, use_demo, dequantize, settings, group, adapter)
    if combine and loaded is None:
        raise InputError("--lookup goes with a draft model (--draft, --pair); for prompt lookup alone: --draft ngram")
    if combine and not KINDS.makes(draft):
        loaded = with_lookup(loaded, settings)
    return target, tokenizer, loaded


def _load_parts(model: Optional[str], draft: Optional[str], pair: Optional[str], use_demo: bool,
                dequantize: bool, settings: DraftSettings, group: Any,
                adapter: Optional[str] = None) -> tuple[Model, Tokenizer, Optional[DraftKind]]:
    """What the options name, loaded (a kind made by name for a registered name); with a
    pipeline `group`, rank 0's part of the target."""
    target_path, draft = named_models(model, draft, pair, use_demo)
    dtype = weights_dtype(dequantize)
    if group is None:
        target, tokenizer = load(target_path, dtype=dtype, dequantize=dequantize, adapter=adapter)
    elif adapter is not None:
        raise InputError("--adapter does not go with --pipeline yet (fuse it first: mlxspec convert SRC -o OUT --adapter A)")
    else:
        target, tokenizer = load_lead(target_path, group, dtype=dtype, dequantize=dequantize)
    if draft is None or KINDS.makes(draft):
        return target, tokenizer, None if draft is None else KINDS.named(draft, settings)
    return target, tokenizer, as_draft(load_draft(draft, target, tokenizer, dtype=dtype, dequantize=dequantize))


def named_models(model: Optional[str], draft: Optional[str], pair: Optional[str],
                 use_demo: bool) -> tuple[str | Path, Optional[str | Path]]:
    """(target, draft or None) that --model/--draft, --pair or --demo name, unloaded."""
    if sum([pair is not None, use_demo, model is not None or draft is not None]) > 1:
        raise InputError("give one of --model/--draft, --pair or --demo")
    if pair is not None:
        folder = Path(pair).expanduser()
        manifest = read_pair_manifest(folder)
        return folder / manifest["target"], folder / manifest["draft"]
    if use_demo:
        return demo_pair.demo_target(), demo_pair.demo_draft()
    if model is None:
        raise InputError("missing --model (or --pair / --demo)")
    return model, draft


def dequantize_default(choice: Optional[bool]) -> bool:
    """Default: dequantize on MLX's CPU backend, where quantized matmuls are slow."""
    return choice if choice is not None else mx.default_device() == mx.cpu


def weights_dtype(dequantize: bool) -> Optional[mx.Dtype]:
    """Weights are expanded to float32 when dequantized, else kept as stored."""
    return mx.float32 if dequantize else None
