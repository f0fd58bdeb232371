"""What kind of pair a target and a draft make, decided in one place for `convert --target
--draft` (recorded in pair.json) and for loading (`load_draft`, `load_pair`): both agree on
which pairs run, so a pair that cannot run is never written."""

from __future__ import annotations

from ..errors import InputError
from ..text import Tokenizer, compare_vocabularies

SAME_VOCABULARY = "same-vocabulary"  # the draft proposes token ids the target reads as they are
PAIR_KINDS = (SAME_VOCABULARY,)
PAIR_VERSION = 2  # of pair.json: 2 records the kind


def pair_kind(target: tuple[Tokenizer, int], draft: tuple[Tokenizer, int]) -> tuple[str, str]:
    """(kind, why) for a target and a draft, each given as (tokenizer, embedding rows).

    Same vocabulary: identical tokenizers, or compatible ones (same pieces for shared ids,
    one padded) over equally sized embeddings. Raises `InputError` for any other pair."""
    verdict, why = compare_vocabularies(target[0], draft[0])
    if verdict == "identical" or (verdict == "compatible" and target[1] == draft[1]):
        return SAME_VOCABULARY, why
    if verdict == "compatible":
        why += f"; embedding rows {target[1]} vs {draft[1]}"
    raise InputError(f"the draft's tokenizer does not match the target's: {why} "
                     "(drafts with another vocabulary are not supported yet)")
