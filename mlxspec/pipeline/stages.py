"""Which blocks each rank of a pipeline holds, and loading only those.

Rank 0 holds the embedding, the first blocks, the final norm and the output head; every
other rank a contiguous run of the blocks after it. The split balances parameters (what
memory a rank needs), so rank 0, which also holds the embedding and head, takes fewer
blocks. Each rank reads only its own tensors from the checkpoint (MLX loads lazily), and
the ranks compare what they were given before the first token: the model's shape, the
split, and a digest of the weights (`digest`), so a rank given another checkpoint of the
same shape stops every rank with one line instead of computing another model's text.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import InputError
from ..load import _load_module
from ..models import Model, ModelArgs
from ..models.config import load_model_args
from .digest import as_words, shown, weights_digest
from .link import LeadModel

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


def block_parameters(args: ModelArgs) -> int:
    """Parameters of one transformer block (attention and feed-forward; norms are noise)."""
    d, hd = args.hidden_size, args.head_dim
    attention = 2 * d * hd * (args.num_attention_heads + args.num_key_value_heads)
    return attention + 3 * d * args.intermediate_size * (args.num_local_experts or 1)


def split_layers(args: ModelArgs, ranks: int) -> list[tuple[int, int]]:
    """The (first, end) blocks of each rank, contiguous and in order, rank 0 lightened by
    the embedding and head it also holds; every rank gets at least one block."""
    n = args.num_hidden_layers
    if not 2 <= ranks <= n:
        raise InputError(f"a pipeline of {ranks} ranks needs between 2 and {n} ranks for a model of {n} layers")
    per_block = block_parameters(args)
    extra = args.vocab_size * args.hidden_size * (1 if args.tie_word_embeddings else 2)
    lead = round(((n * per_block + extra) / ranks - extra) / per_block)
    lead = min(max(lead, 1), n - (ranks - 1))
    rest, others = n - lead, ranks - 1
    sizes = [lead] + [rest // others + (1 if r < rest % others else 0) for r in range(others)]
    ends = [sum(sizes[: r + 1]) for r in range(ranks)]
    return [(end - size, end) for size, end in zip(sizes, ends)]


def _stage_name(name: str, first: int, end: int, lead: bool) -> str | None:
    """A checkpoint name as the rank's model calls it (its blocks renumbered from 0), or None
    when the tensor belongs to another rank."""
    match = _LAYER.match(name)
    if match is None:
        return name if lead else None
    index = int(match.group(1))
    return f"model.layers.{index - first}.{match.group(2)}" if first <= index < end else None


def load_stage(model_dir: Path, rank: int, ranks: int, dtype: mx.Dtype | None,
               dequantize: bool) -> tuple[Model, list[int]]:
    """This rank's part of the model in `model_dir`: a `Model` with only its blocks (rank 0
    also the embedding, norm and head; the others have none of those), and its `describe`."""
    whole = load_model_args(model_dir)
    first, end = split_layers(whole, ranks)[rank]

    def select(weights: dict[str, mx.array], args: ModelArgs) -> tuple[dict[str, mx.array], ModelArgs]:
        kept = {new: w for name, w in weights.items() if (new := _stage_name(name, first, end, rank == 0))}
        quant = args.quantization
        if isinstance(quant, dict):  # per-layer overrides follow their layers
            quant = {new: v for k, v in quant.items()
                     if (new := (k if not isinstance(v, dict) else _stage_name(k, first, end, rank == 0)))}
        return kept, replace(args, num_hidden_layers=end - first, quantization=quant)

    def build(args: ModelArgs) -> Model:
        model = LeadModel(args) if rank == 0 else Model(args)
        if rank > 0:
            for name in ("embed_tokens", "norm"):
                model.model.pop(name)
            model.pop("lm_head", None)
        return model

    stage = _load_module(model_dir, build, dtype, dequantize, select)
    return stage, describe(whole, (first, end), ranks, weights_digest(model_dir, dtype, dequantize))


def describe(args: ModelArgs, stage: tuple[int, int], ranks: int, digest: bytes) -> list[int]:
    """What every rank must agree on, as integers: the model's shape, the split (indices 5
    and 6: this rank's first and end block), the number of ranks, the weights' digest."""
    return [args.num_hidden_layers, args.hidden_size, args.vocab_size, args.num_local_experts or 0,
            args.sliding_window or 0, *stage, ranks, *as_words(digest)]


def check_agreement(mine: list[int], group: Any) -> None:
    """All ranks loaded the same model and their blocks tile it in rank order (an
    all-gather of every rank's `describe`); raises the same error on every rank otherwise."""
    everyone = mx.distributed.all_gather(mx.array([mine], dtype=mx.int64), group=group).tolist()
    lead = everyone[0]
    for rank, theirs in enumerate(everyone):
        if theirs[:5] != lead[:5] or theirs[7] != lead[7]:
            raise InputError(f"pipeline rank {rank} loaded a different model (layers, hidden size, vocabulary, "
                             f"experts, window: {theirs[:5]}) from rank 0 ({lead[:5]}): give every rank the same model")
        if theirs[8:] != lead[8:]:
            raise InputError(f"pipeline rank {rank} loaded a different model from rank 0: the same shape, but other "
                             f"weights, configuration or dtype/--dequantize options (weights digest {shown(theirs[8:])} "
                             f"against {shown(lead[8:])}): give every rank the same model files and options")
        start = 0 if rank == 0 else everyone[rank - 1][6]
        if theirs[5] != start or (rank == len(everyone) - 1 and theirs[6] != lead[0]):
            raise InputError(f"pipeline rank {rank} holds blocks {theirs[5]}..{theirs[6] - 1}, which do not follow "
                             "the other ranks': run the same mlxspec version on every rank")
