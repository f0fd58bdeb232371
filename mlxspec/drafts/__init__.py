"""Drafts: who proposes the tokens the target verifies. A kind of draft is one object
(`kind.DraftKind`) in a module of its own that registers its name (`kind.register`): a
draft model, a feature draft, a draft with another vocabulary, prompt lookup, and lookup in
front of a draft model. The engine asks a draft for drafters and never what kind it is."""

from __future__ import annotations

from ..errors import InputError, InputTypeError
from ..models import KVQuantization, Model, is_model, kv_keyword
from .combined import LookupAndModel, LookupAndModelDrafter, with_lookup
from .feature import DRAFT_TYPE, FeatureDraft, FeatureDrafter, draft_config, target_subset_head
from .kind import KINDS, DraftKind, DraftSettings, register
from .model_draft import ModelDraft, ModelDrafter, parameter_count
from .ngram import NGramDraft, NGramDrafter
from .other_vocabulary import OtherVocabularyDraft, OtherVocabularyDrafter
from .protocol import BatchDrafter, Drafter, Outlook, Pick, Proposal
from .rows import EachRow, one_row

Draft = DraftKind | Model  # what a session drafts with: a draft kind, or a draft model as loaded
MAX_DRAFT_TOKENS = 64  # the caches keep this many positions to roll back; acceptance makes more pointless


def as_draft(draft: object, settings: DraftSettings = DraftSettings()) -> DraftKind:
    """The draft kind of `draft`: a kind as it is, a loaded draft model (a `Model`) as a
    `ModelDraft`, a registered name ("ngram") made with `settings`; `InputTypeError` else."""
    if isinstance(draft, str):
        named = KINDS.named(draft, settings)
        if named is None:
            raise InputTypeError(f"draft must be a loaded draft (mlxspec.load_draft(path, model, tokenizer)) or the "
                                 f"name of a kind of draft ({KINDS.help()}), got the string {draft!r}")
        return named
    if is_model(draft):
        return ModelDraft(draft)
    if not isinstance(draft, DraftKind):
        raise InputTypeError(f"draft must be a loaded draft (mlxspec.load_draft(path, model, tokenizer)) or the "
                             f"name of a kind of draft ({KINDS.help()}), got {type(draft).__name__}")
    return draft


def draft_settings(max_ngram: int = 3, min_ngram: int = 1) -> DraftSettings:
    """The command line's settings for drafts made by name, checked before anything loads."""
    NGramDraft(max_ngram, min_ngram)  # raises for sizes prompt lookup cannot use
    return DraftSettings(max_ngram, min_ngram)


def make_drafter(draft: Draft, target: Model, k_max: int, chunk: int, greedy: bool = True,
                 kv: KVQuantization | None = None) -> EachRow:
    """A fresh drafter (its own state) for one sequence with this draft: a batch of one row.
    With `kv` the draft's caches are quantized as the target's are."""
    return one_row(as_draft(draft).drafter(target, k_max, chunk, greedy, **kv_keyword(kv)))


def batch_drafter(draft: DraftKind, target: Model, k_max: int, chunk: int,
                  kv: KVQuantization | None = None) -> BatchDrafter:
    """A fresh drafter for the rows of a batch: the kind's own, which drafts every row in one
    pass, where it has one; else one drafter per row (caches as in `make_drafter`)."""
    if draft.batches:
        return draft.batch_drafter(target, chunk, **kv_keyword(kv))
    return EachRow(lambda greedy: draft.drafter(target, k_max, chunk, greedy, **kv_keyword(kv)))


def check_draft_length(num_draft_tokens: int, option: str = "num_draft_tokens") -> None:
    """At most MAX_DRAFT_TOKENS drafted per round (the caches keep that many for rollback)."""
    if not 1 <= num_draft_tokens <= MAX_DRAFT_TOKENS:
        raise InputError(f"{option} must be in 1..{MAX_DRAFT_TOKENS}, got {num_draft_tokens}")


def check_draft(target: Model, draft: Draft, num_draft_tokens: int) -> None:
    """Raise `InputError` for a draft that cannot verify against this target; warn when a
    draft model is not smaller than the target (speculation would only slow things down)."""
    check_draft_length(num_draft_tokens)
    as_draft(draft).check(target, num_draft_tokens)


def describe_draft(draft: Draft) -> str:
    """One line saying what kind of draft this is."""
    return as_draft(draft).describe()


__all__ = ["DRAFT_TYPE", "KINDS", "MAX_DRAFT_TOKENS", "BatchDrafter", "Draft", "DraftKind", "DraftSettings", "Drafter", "EachRow",
           "FeatureDraft", "FeatureDrafter", "LookupAndModel", "LookupAndModelDrafter", "ModelDraft", "ModelDrafter",
           "NGramDraft", "NGramDrafter", "OtherVocabularyDraft", "OtherVocabularyDrafter", "Outlook", "Pick",
           "Proposal", "as_draft", "batch_drafter", "check_draft", "check_draft_length", "describe_draft", "draft_config", "draft_settings",
           "make_drafter", "one_row", "parameter_count", "register", "target_subset_head", "with_lookup"]
