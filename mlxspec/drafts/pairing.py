"""What kind of pair a target and a draft make, decided in one place for `convert --target
--draft` (recorded in pair.json) and for loading (`load_draft`, `load_pair`): both agree on
which pairs run, so a pair that cannot run is never written."""

from __future__ import annotations

from ..errors import InputError
from ..models import Model
from ..text import Tokenizer, compare_vocabularies
from .other_vocabulary import OtherVocabularyDraft

SAME_VOCABULARY = "same-vocabulary"  # the draft proposes token ids the target reads as they are
OTHER_VOCABULARY = "other-vocabulary"  # the draft meets the target on the text (`other_vocabulary`)
PAIR_KINDS = (SAME_VOCABULARY, OTHER_VOCABULARY)
PAIR_VERSION = 2  # of pair.json: 2 records the kind


def shared_tokens(target: Tokenizer, draft: Tokenizer) -> int:
    """How many of the draft's tokens spell the same bytes as one of the target's."""
    spelled = {b for b in target.token_bytes() if b}
    return sum(1 for b in draft.token_bytes() if b and b in spelled)


def pair_kind(target: tuple[Tokenizer, int], draft: tuple[Tokenizer, int]) -> tuple[str, str]:
    """(kind, why) for a target and a draft, each given as (tokenizer, embedding rows).

    Same vocabulary: identical tokenizers, or compatible ones (same pieces for shared ids,
    one padded) over equally sized embeddings. Any other pair drafts across vocabularies,
    which needs tokens both spell alike: raises `InputError` when there are none."""
    verdict, why = compare_vocabularies(target[0], draft[0])
    if verdict == "identical" or (verdict == "compatible" and target[1] == draft[1]):
        return SAME_VOCABULARY, why
    if verdict == "compatible":
        why += f"; embedding rows {target[1]} vs {draft[1]}"
    shared = shared_tokens(target[0], draft[0])
    if not shared:
        raise InputError(f"the draft's tokenizer shares no token with the target's ({why}; no draft token spells "
                         "the same text as a target token): it cannot draft for this target")
    return OTHER_VOCABULARY, f"{why}; {shared} of the draft's tokens spell a target token"


def pair_draft(target: tuple[Model, Tokenizer], draft: tuple[Model, Tokenizer]) -> Model | OtherVocabularyDraft:
    """The draft model as the pair's kind (see `pair_kind`) needs it: itself with the
    target's vocabulary, else an `OtherVocabularyDraft`. Raises `InputError` when the draft
    cannot propose anything the target reads."""
    kind = pair_kind((target[1], target[0].args.vocab_size), (draft[1], draft[0].args.vocab_size))[0]
    return draft[0] if kind == SAME_VOCABULARY else OtherVocabularyDraft(draft[0], draft[1], target[1])
