"""The target and draft that a command's model options select: --model [--draft], --pair
or --demo; `--draft ngram` is prompt lookup, and --lookup puts it in front of a draft model."""

from __future__ import annotations

from typing import Optional

import mlx.core as mx

from . import demo as demo_pair
from .drafts import Draft, LookupAndModel, NGramDraft
from .errors import InputError
from .load import load, load_draft, load_pair
from .models import Model
from .text import Tokenizer


def select_models(model: Optional[str], draft: Optional[str], pair: Optional[str], use_demo: bool,
                  dequantize: bool, lookup: NGramDraft = NGramDraft(),
                  combine: bool = False) -> tuple[Model, Tokenizer, Optional[Draft]]:
    """(target, tokenizer, draft or None) from --model [--draft], --pair or --demo; `--draft
    ngram` is prompt lookup with the `lookup` settings, which `combine` (--lookup) puts in
    front of a draft model."""
    target, tokenizer, loaded = _load_parts(model, draft, pair, use_demo, dequantize, lookup)
    if combine and loaded is not None and not isinstance(loaded, NGramDraft):
        loaded = LookupAndModel(loaded, lookup)
    elif combine and loaded is None:
        raise InputError("--lookup goes with a draft model (--draft, --pair); for prompt lookup alone: --draft ngram")
    return target, tokenizer, loaded


def _load_parts(model: Optional[str], draft: Optional[str], pair: Optional[str], use_demo: bool,
                dequantize: bool, lookup: NGramDraft) -> tuple[Model, Tokenizer, Optional[Draft]]:
    """What the options name, loaded (prompt lookup alone for `--draft ngram`)."""
    if sum([pair is not None, use_demo, model is not None or draft is not None]) > 1:
        raise InputError("give one of --model/--draft, --pair or --demo")
    dtype = mx.float32 if dequantize else None
    if pair is not None:
        return load_pair(pair, dtype=dtype, dequantize=dequantize)
    if use_demo:
        model, draft = str(demo_pair.demo_target()), str(demo_pair.demo_draft())
    if model is None:
        raise InputError("missing --model (or --pair / --demo)")
    target, tokenizer = load(model, dtype=dtype, dequantize=dequantize)
    if draft == "ngram":
        return target, tokenizer, lookup
    loaded = None if draft is None else load_draft(draft, target, tokenizer, dtype=dtype, dequantize=dequantize)
    return target, tokenizer, loaded
