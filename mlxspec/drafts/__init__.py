"""Drafts: who proposes the tokens the target verifies. One module per kind, all behind
the `Drafter` protocol; `make_drafter` gives the speculative loop the right one."""

from __future__ import annotations

import warnings

from mlx.utils import tree_flatten

from ..errors import InputError
from ..models import Model
from .combined import LookupAndModel, LookupAndModelDrafter
from .feature import DRAFT_TYPE, FeatureDraft, FeatureDrafter, draft_config, target_subset_head
from .model_draft import ModelDrafter
from .ngram import NGramDraft, NGramDrafter
from .other_vocabulary import OtherVocabularyDraft, OtherVocabularyDrafter
from .protocol import Drafter, Outlook, Pick, Proposal

Draft = Model | FeatureDraft | NGramDraft | OtherVocabularyDraft | LookupAndModel  # what a session drafts with
DRAFT_TYPES = (Model, FeatureDraft, NGramDraft, OtherVocabularyDraft, LookupAndModel)
MAX_DRAFT_TOKENS = 64  # the caches keep this many positions to roll back; acceptance makes more pointless


def make_drafter(draft: Draft, target: Model, k_max: int, chunk: int, greedy: bool = True,
                 timing: bool = False) -> Drafter:
    """A fresh drafter (its own cache) for one generation with this kind of draft, decoding
    greedily or not. `timing`: for the calibration, which times rounds of every length
    (prompt lookup and re-spelled drafts then always propose k tokens)."""
    if isinstance(draft, NGramDraft):
        return NGramDrafter(draft, always=timing)
    if isinstance(draft, LookupAndModel):
        return LookupAndModelDrafter(draft, make_drafter(draft.model, target, k_max, chunk, greedy, timing), timing)
    if isinstance(draft, OtherVocabularyDraft):
        return OtherVocabularyDrafter(draft, k_max, chunk, greedy, timing)
    if isinstance(draft, FeatureDraft):
        return FeatureDrafter(draft, target, chunk)
    return ModelDrafter(draft, k_max, chunk)


def check_draft_length(num_draft_tokens: int, option: str = "num_draft_tokens") -> None:
    """At most MAX_DRAFT_TOKENS drafted per round (the caches keep that many for rollback)."""
    if not 1 <= num_draft_tokens <= MAX_DRAFT_TOKENS:
        raise InputError(f"{option} must be in 1..{MAX_DRAFT_TOKENS}, got {num_draft_tokens}")


def check_draft(target: Model, draft: Draft, num_draft_tokens: int) -> None:
    """Raise `InputError` for a draft that cannot verify against this target; warn when a
    draft model is not smaller than the target (speculation would only slow things down)."""
    check_draft_length(num_draft_tokens)
    if isinstance(draft, LookupAndModel):
        if not isinstance(draft.model, (Model, OtherVocabularyDraft)):
            raise InputError("prompt lookup combines with a draft model, not with a feature draft")
        draft = draft.model
    if isinstance(draft, NGramDraft):
        return
    if not isinstance(draft, OtherVocabularyDraft) and draft.args.vocab_size != target.args.vocab_size:
        raise InputError(
            f"draft vocabulary size {draft.args.vocab_size} differs from the target's {target.args.vocab_size}; "
            "to draft across vocabularies, load it with mlxspec.load_draft(path, target, tokenizer)"
        )
    model = draft.model if isinstance(draft, OtherVocabularyDraft) else draft
    if isinstance(model, Model) and parameter_count(model) >= parameter_count(target):
        warnings.warn(
            f"the draft ({parameter_count(model) / 1e6:.0f}M parameters) is not smaller than the target "
            f"({parameter_count(target) / 1e6:.0f}M); speculation will not pay off", stacklevel=3,
        )


def parameter_count(model: Model) -> int:
    """Number of weights as stored (quantized weights count packed elements)."""
    return sum(v.size for _, v in tree_flatten(model.parameters()))


def describe_draft(draft: Draft) -> str:
    """One line saying what kind of draft this is."""
    if isinstance(draft, LookupAndModel):
        return draft.describe(describe_draft(draft.model))
    if isinstance(draft, (NGramDraft, OtherVocabularyDraft)):
        return draft.describe()
    a = draft.args
    head = f", head over {a.head_vocab_size} tokens" if a.head_vocab_size else ""
    if isinstance(draft, FeatureDraft):
        return f"feature draft (reads the target's hidden states), {a.num_hidden_layers} blocks{head}"
    return f"draft model, {a.num_hidden_layers} blocks{head}"


__all__ = ["DRAFT_TYPE", "DRAFT_TYPES", "LookupAndModel", "LookupAndModelDrafter", "MAX_DRAFT_TOKENS", "Draft", "NGramDraft", "NGramDrafter", "OtherVocabularyDraft", "OtherVocabularyDrafter", "Outlook", "check_draft_length", "Drafter", "FeatureDraft", "FeatureDrafter", "ModelDrafter", "Pick", "Proposal",
           "check_draft", "describe_draft", "draft_config", "make_drafter", "parameter_count", "target_subset_head"]
