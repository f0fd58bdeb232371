"""The baseline `mlxspec bench --compare-mlx-lm` measures against: mlx-lm's own plain and
speculative loops (`generate_step`, `speculative_generate_step`) on mlxspec's weights."""

from __future__ import annotations

from typing import Any, Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .engine.options import GenerationOptions
from .errors import InputError
from .models import ForeignModel, Model

_MLX_LM_MODULES = {"mistral": "llama"}  # model_type -> mlx-lm's module, where the names differ


class SubsetHeadDraft(nn.Module):
    """mlx-lm's transformer body under mlxspec's subset head (mlx-lm has no such head)."""

    def __init__(self, body: Any, head: nn.Module) -> None:
        super().__init__()
        self.body, self.head = body, head

    @property
    def layers(self) -> list:
        return self.body.layers

    def __call__(self, inputs: mx.array, cache: Any = None, **kwargs: Any) -> mx.array:
        return self.head(self.body.model(inputs, cache=cache))


def _their_model(model: Model | ForeignModel) -> Any:
    """The same weights in mlx-lm's module for the model's family (its Llama module for a
    Mistral, as mlx-lm itself runs one); a model mlx-lm already runs is its own module."""
    import importlib

    if isinstance(model, ForeignModel):
        return model.lm

    if model.args.quantization:
        raise InputError("--compare-mlx-lm needs unquantized weights here (use --dequantize)")
    config = model.args.to_hf_config()
    config.pop("quantization", None)
    config.pop("head_vocab_size", None)
    family = importlib.import_module(f"mlx_lm.models.{_MLX_LM_MODULES.get(model.args.model_type, model.args.model_type)}")
    theirs = family.Model(family.ModelArgs.from_dict(config))
    theirs.load_weights([(k, v) for k, v in tree_flatten(model.parameters()) if not k.startswith("lm_head")],
                        strict=False)
    if not model.args.tie_word_embeddings and not model.args.head_vocab_size:
        theirs.load_weights([("lm_head.weight", model.lm_head.weight)], strict=False)
    return theirs


def mlx_lm_models(target: Model, draft: Model | None) -> tuple[Any, Any]:
    """mlx-lm modules holding the target's and the draft's weights (a draft with a subset
    head keeps mlxspec's head over mlx-lm's body)."""
    their_draft = None
    if draft is not None:
        body = _their_model(draft)
        their_draft = SubsetHeadDraft(body, draft.lm_head) if draft.args.head_vocab_size else body
    return _their_model(target), their_draft


def mlx_lm_sampling(options: GenerationOptions) -> dict[str, Any]:
    """mlx-lm's sampler and logits processors for these options (the ones mlx-lm has)."""
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    p = options.sampling
    sampler = make_sampler(temp=p.temperature, top_p=p.top_p, min_p=p.min_p, top_k=p.top_k)
    window = p.repetition_context  # mlxspec's one window for every penalty
    processors = make_logits_processors(dict(p.logit_bias) or None, p.repetition_penalty
                                        if p.repetition_penalty != 1.0 else None, window,
                                        p.presence_penalty or None, window, p.frequency_penalty or None, window)
    return {"sampler": sampler, "logits_processors": processors, "max_tokens": options.max_tokens}


def mlx_lm_tokens(target: Any, draft: Any | None, prompt: list[int], options: GenerationOptions,
                  k: int, seed: int) -> Iterator[tuple[int, bool]]:
    """(token, from the draft) from mlx-lm's loop: plain for k = 0, else speculative with k drafts."""
    from mlx_lm.generate import generate_step, speculative_generate_step

    mx.random.seed(seed)
    sampling = mlx_lm_sampling(options)
    if k == 0:
        for token, _ in generate_step(mx.array(prompt), target, **sampling):
            yield int(token), False
        return
    for token, _, from_draft in speculative_generate_step(mx.array(prompt), target, draft, num_draft_tokens=k,
                                                          **sampling):
        yield int(token), bool(from_draft)


def rounds_from_flags(flags: list[bool], k: int) -> tuple[list[int], list[int]]:
    """(drafted, accepted) per draft position, recovered from mlx-lm's from-draft flags: a
    round is a run of accepted draft tokens, then one target token. The first token comes
    from the prefill."""
    drafted, accepted, run = [0] * k, [0] * k, 0
    for flag in flags[1:]:
        if flag:
            run += 1
            continue
        for j in range(k):
            drafted[j] += 1
            accepted[j] += int(j < run)
        run = 0
    return drafted, accepted
