"""Tokens as bytes: what each token id spells, and how one tokenizer spells a growing text.
Drafts with another vocabulary meet the target on the text itself, so both sides need the
exact bytes of every token (SentencePiece's "▁" is a space, "<0x0A>" a byte; byte-level
BPE maps every byte to a printable character) and the tokens a tokenizer would give a
piece of text in the middle of a document (no BOS, no extra leading space)."""

from __future__ import annotations

import functools
import re

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
ANCHOR = "\n"  # text before a fragment, so that a tokenizer's dummy-prefix space lands on it


@functools.cache
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet: printable character -> the byte it stands for."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def byte_level_bytes(piece: str) -> bytes:
    """The bytes a byte-level BPE piece stands for."""
    alphabet = byte_level_alphabet()
    if all(c in alphabet for c in piece):
        return bytes(alphabet[c] for c in piece)
    return piece.encode("utf-8")


def is_byte_piece(piece: str | None) -> bool:
    """Whether a piece is a SentencePiece byte-fallback token ("<0x2C>"): a spelling the
    tokenizer falls back on only for text its other pieces cannot spell."""
    return piece is not None and _BYTE_PIECE.match(piece) is not None


def metaspace_bytes(piece: str) -> bytes:
    """The bytes a SentencePiece-style piece stands for: "▁" is a space, "<0xAB>" one byte."""
    match = _BYTE_PIECE.match(piece)
    if match:
        return bytes([int(match[1], 16)])
    return piece.replace("▁", " ").encode("utf-8")


def complete_length(text: bytes) -> int:
    """Length of the longest prefix of `text` that does not end inside a UTF-8 character."""
    end, back = len(text), 0
    while back < min(3, end) and 0x80 <= text[end - 1 - back] < 0xC0:
        back += 1  # continuation bytes of the last character
    if back == end or text[end - 1 - back] < 0xC0:
        return end  # ASCII last, or bytes that are no character at all (left for the tokenizer)
    lead = text[end - 1 - back]
    need = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return end if back + 1 >= need else end - back - 1


def spell(encode, token_bytes: list[bytes | None], text: bytes) -> tuple[list[int], list[int]]:
    """(ids, ends) of `text` (complete UTF-8) as a tokenizer spells it in mid-document:
    encoded after `ANCHOR`, whose tokens are dropped, or alone when the anchor's tokens do
    not end where the text starts. `ends[i]` is where token i ends in `text`."""
    if not text:
        return [], []
    string = text.decode("utf-8", errors="replace")
    ids = encode(ANCHOR + string)
    ends = _ends(ids, token_bytes)
    start = (ends[-1] if ends else 0) - len(text)
    if start in ends and start >= 0:
        first = ends.index(start) + 1
        while first < len(ids) and ends[first] == start:
            first += 1  # empty tokens at the boundary belong to the anchor
        return ids[first:], [e - start for e in ends[first:]]
    ids = encode(string)
    return ids, [min(e, len(text)) for e in _ends(ids, token_bytes)]


def _ends(ids: list[int], token_bytes: list[bytes | None]) -> list[int]:
    """Where each token of `ids` ends in the bytes they spell together."""
    ends, total = [], 0
    for i in ids:
        total += len(token_bytes[i] or b"") if 0 <= i < len(token_bytes) else 0
        ends.append(total)
    return ends
