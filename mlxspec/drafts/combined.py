"""Prompt lookup where the text repeats itself, a draft model elsewhere: each round the
lookup's match decides which of the two proposes, and the other follows the verified text.
A long match is nearly always right and costs nothing to draft; a short one is mostly
chance, where a draft model predicts better."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from ..models import Model
from .ngram import NGramDraft, NGramDrafter, match_prior
from .other_vocabulary import OtherVocabularyDraft
from .protocol import MODEL_OUTLOOK, Drafter, Outlook, Pick, Proposal


@dataclass(frozen=True)
class LookupAndModel:
    """A draft model (same or other vocabulary) with prompt lookup in front of it: lookup
    proposes where its match runs at least `min_match` tokens back."""

    model: Model | OtherVocabularyDraft
    lookup: NGramDraft = field(default_factory=NGramDraft)
    min_match: int = 3

    @property
    def args(self):
        """The draft model's configuration."""
        return self.model.args

    def describe(self, model: str) -> str:
        """One line saying what this draft is, given the draft model's own line."""
        return f"prompt lookup where a match runs {self.min_match}+ tokens back, else the {model}"


class LookupAndModelDrafter:
    """Both drafters kept on the verified text; the outlook picks which one proposes."""

    mode = "prompt lookup + draft model"
    feature_layers = None
    varies = True

    def __init__(self, draft: LookupAndModel, model: Drafter, timing: bool = False) -> None:
        self.lookup, self.model = NGramDrafter(draft.lookup), model
        self.threshold = match_prior(draft.min_match)
        self.timing = timing  # the calibration times the draft model's rounds (the dearer kind)
        self.chosen: Drafter = model
        self.last: int | None = None

    def outlook(self, last: int) -> Outlook:
        found = self.lookup.outlook(last)
        use_lookup = not self.timing and found.most > 0 and found.prior >= self.threshold
        self.chosen = self.lookup if use_lookup else self.model
        return found if use_lookup else MODEL_OUTLOOK

    def extend(self, tokens: list[int], features: mx.array | None = None) -> None:
        self.lookup.extend(tokens)
        self.model.extend(tokens, features)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        self.last = last
        return self.chosen.propose(last, k, pick)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None = None) -> None:
        self.chosen.settle(accepted, drafted, features)
        other = self.model if self.chosen is self.lookup else self.lookup
        other.extend([self.last, *drafted[:accepted]])
