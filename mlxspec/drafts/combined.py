"""Prompt lookup where the text repeats itself, a draft model or a feature draft elsewhere:
each round the lookup's match decides which of the two proposes, and the other follows the
verified text. A long match is nearly always right and costs nothing to draft; a short one
is mostly chance, where a draft predicts better. A feature draft catches up from the hidden
states the verification pass computed anyway over the tokens lookup proposed (no extra
target pass)."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from ..models import KVQuantization, Model, is_model, kv_keyword
from .kind import DraftKind, DraftSettings
from .model_draft import ModelDraft
from .ngram import NGramDraft, NGramDrafter, match_prior
from .protocol import MODEL_OUTLOOK, Drafter, Outlook, Pick, Proposal


@dataclass(frozen=True)
class LookupAndModel:
    """A draft model (same or other vocabulary) or a feature draft with prompt lookup in front
    of it: lookup proposes where its match runs at least `min_match` tokens back."""

    model: DraftKind  # a draft model, of the target's vocabulary or another, or a feature draft
    lookup: NGramDraft = field(default_factory=NGramDraft)
    min_match: int = 3

    batches = False

    def __post_init__(self) -> None:
        if is_model(self.model):  # a draft model as loaded
            object.__setattr__(self, "model", ModelDraft(self.model))

    @property
    def reads_features(self) -> bool:
        """Whether the draft behind lookup reads the target's hidden states."""
        return self.model.reads_features

    @property
    def args(self):
        """The draft model's configuration."""
        return self.model.args

    def describe(self) -> str:
        """One line saying what this draft is."""
        return f"prompt lookup where a match runs {self.min_match}+ tokens back, else the {self.model.describe()}"

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> LookupAndModelDrafter:
        return LookupAndModelDrafter(self, self.model.drafter(target, k_max, chunk, greedy, **kv_keyword(kv)))

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        raise NotImplementedError("prompt lookup in front of a draft model does not batch")

    def check(self, target: Model, num_draft_tokens: int) -> None:
        self.model.check(target, num_draft_tokens)

    def vocabulary(self, target: Model) -> int:
        return self.model.vocabulary(target)

    def fingerprint(self) -> dict:
        return {"lookup": repr(self.lookup), "min_match": self.min_match, "model": self.model.fingerprint()}

    @property
    def timed(self) -> DraftKind:
        """The calibration times the draft model's rounds (the dearer kind)."""
        return self.model

    @property
    def token_model(self) -> Model | None:
        """The draft model alone (what another runtime can run of this)."""
        return self.model.token_model


class LookupAndModelDrafter:
    """Both drafters kept on the verified text; the outlook picks which one proposes."""

    varies = True

    def __init__(self, draft: LookupAndModel, model: Drafter) -> None:
        self.lookup, self.model = NGramDrafter(draft.lookup), model
        self.mode = f"prompt lookup + {model.mode}"
        self.feature_layers = model.feature_layers  # a feature draft's: the target hands them over
        self.threshold = match_prior(draft.min_match)
        self.chosen: Drafter = model
        self.last: int | None = None

    def outlook(self, last: int) -> Outlook:
        found = self.lookup.outlook(last)
        use_lookup = found.most > 0 and found.prior >= self.threshold
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
        # the pass fed the newest token and the drafts: its hidden states pair with what was kept
        other.extend([self.last, *drafted[:accepted]], None if features is None else features[:, : accepted + 1])


def with_lookup(draft: DraftKind, settings: DraftSettings) -> LookupAndModel:
    """Prompt lookup with the command line's settings in front of a draft model or a feature draft."""
    return LookupAndModel(draft, NGramDraft(settings.max_ngram, settings.min_ngram), settings.min_match)
