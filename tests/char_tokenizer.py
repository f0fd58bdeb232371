"""A tiny tokenizer for tiny models: 64 ids, mostly single characters, some spelling two to
five characters ('{"', '":', 'true', 'ab', ...), so that text has several tokenizations
and a grammar's masks are not just the characters it allows. Id 0 is the end of sequence,
1 the beginning; both spell nothing."""

from __future__ import annotations

from mlxspec.text import Tokenizer

SINGLE = list('{}[]":, ') + list("0123456789") + list("abcdefghijklmnopqrstuvwxyz")
MULTI = ['{"', '":', '",', '"}', "true", "false", "null", "ab", "cd", "ef", '"a', 'b"', ", ", ": ", "10", "abc",
         "  ", "\n"]
PIECES = ["</s>", "<s>", *SINGLE, *MULTI]
assert len(PIECES) == 64


class CharTokenizer(Tokenizer):
    """Greedy longest-match encoding over `PIECES`."""

    def __init__(self) -> None:
        self.bos_id, self.eos_ids, self.vocab_size, self.chat_template = 1, {0}, len(PIECES), None
        self._ids = {p: i for i, p in enumerate(PIECES) if i > 1}

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids, at = [1] if add_bos else [], 0
        while at < len(text):
            size = next(n for n in (5, 4, 3, 2, 1) if text[at: at + n] in self._ids)
            ids.append(self._ids[text[at: at + size]])
            at += size
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(PIECES[i] for i in ids if i > 1)

    def pieces(self) -> list[str]:
        return list(PIECES)

    def _spelled_tokens(self) -> list[bytes | None]:
        return [None, None, *(p.encode() for p in PIECES[2:])]

    def encode_special(self, text: str) -> list[int]:
        return self.encode(text, add_bos=False)
