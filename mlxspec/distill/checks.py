"""What `distill` checks before any work, each failure one `InputError` naming the option
and the range it must be in: every number and choice it is given, and, once the target is
loaded, what depends on it (the draft's depth, the head's size, rows and answers within the
target's context). A value that would train a useless draft (a learning rate <= 0), fail
late (nan, a seed MLX cannot take) or exhaust memory (a row of 10^9 positions) never
starts a run."""

from __future__ import annotations

import math
from typing import Any

from ..drafts import MAX_DRAFT_TOKENS
from ..errors import InputError
from ..validate import is_int, is_real
from .drafts import KINDS

COUNT_MAX = 2**31 - 1  # MLX's schedules and indices are int32
SEED_MAX = 2**32 - 1  # seed * 1_000_003 + step still fits MLX's uint64 keys
LR_MAX = 1.0  # AdamW moves each weight by about lr a step: beyond 1 nothing is learnt
CONTEXT_UNSTATED = 2**17  # a target whose config gives no context: rows and answers up to this

# option -> (how the command line spells it, least value); each also at most COUNT_MAX
_COUNTS = {"steps": ("--steps", 1), "batch": ("--batch", 1), "layers": ("--layers", 1),
           "seq_len": ("--seq-len", 2), "max_new": ("--max-new", 1), "unroll": ("--unroll", 1),
           "answer_batch": ("answer_batch", 1), "eval_prompts": ("eval_prompts", 1),
           "checkpoint_every": ("checkpoint_every", 1)}


def check_options(options: dict[str, Any]) -> None:
    """Every option that does not depend on the target (see the module docstring)."""
    if options["kind"] not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {options['kind']!r}")
    for name, (flag, least) in _COUNTS.items():
        _count(options[name], flag, least, COUNT_MAX)
    if options["head_vocab"] is not None:
        _count(options["head_vocab"], "--head-vocab", 1, COUNT_MAX)
    _count(options["eval_k"], "eval_k", 1, MAX_DRAFT_TOKENS)
    _count(options["seed"], "--seed", 0, SEED_MAX)
    if options["unroll"] >= options["seq_len"]:
        raise InputError(f"--unroll must be less than --seq-len ({options['seq_len']}): each pass reads one "
                         f"position further, got {options['unroll']}")
    if options["kind"] != "feature" and options["unroll"] != 1:
        raise InputError("--unroll is for feature drafts (--kind feature)")
    lr = options["lr"]
    if not (is_real(lr) and math.isfinite(lr) and 0 < lr <= LR_MAX):
        raise InputError(f"--lr must be a number in (0, {LR_MAX:g}], got {lr!r}")
    minutes = options["minutes"]
    if minutes is not None and not (is_real(minutes) and math.isfinite(minutes) and minutes > 0):
        raise InputError(f"--minutes must be a finite number > 0, got {minutes!r}")
    for name in ("resume", "force"):
        if not isinstance(options[name], bool):
            raise InputError(f"{name} must be True or False, got {options[name]!r}")
    if options["dequantize"] not in (None, True, False):
        raise InputError(f"dequantize must be None, True or False, got {options['dequantize']!r}")


def _count(value: object, flag: str, least: int, most: int) -> None:
    if not is_int(value) or not least <= value <= most:
        raise InputError(f"{flag} must be an integer in {least}..{most}, got {value!r}")


def context_of(model: Any) -> int:
    """The positions the target attends over: its config's, else CONTEXT_UNSTATED."""
    return model.args.max_position_embeddings or CONTEXT_UNSTATED


def check_for_target(options: dict[str, Any], model: Any) -> None:
    """What depends on the loaded target: the draft's blocks start from its first ones, the
    head scores part of its vocabulary, a row and an answer stay within its context."""
    depth, vocab, context = model.depth, model.args.vocab_size, context_of(model)
    if options["layers"] > depth:
        raise InputError(f"--layers must be in 1..{depth} (the draft starts from the target's first blocks; "
                         f"it has {depth}), got {options['layers']}")
    if options["head_vocab"] is not None and options["head_vocab"] > vocab:
        raise InputError(f"--head-vocab must be in 1..{vocab} (the target's vocabulary), got {options['head_vocab']}")
    if options["seq_len"] > context:
        raise InputError(f"--seq-len must be in 2..{context} (the target's context), got {options['seq_len']}")
    if options["max_new"] >= context:
        raise InputError(f"--max-new must be in 1..{context - 1} (the target's context, less a prompt token), "
                         f"got {options['max_new']}")
