"""Streaming detokenization: token ids in, text deltas out, never half a character; the
joined deltas equal the decoded whole."""

from __future__ import annotations

from typing import Any, Callable, Protocol

REPLACEMENT = "\ufffd"


class StreamingDetokenizer:
    """Turns token ids into text deltas as they arrive.

    Each token is decoded together with a few already-emitted tokens of context, and the
    context's own text is subtracted: SentencePiece's leading-space pieces keep their space,
    and a delta is held back while it ends in an incomplete UTF-8 sequence (byte-fallback
    pieces like `<0xF0>` are released only once the whole character is there). The joined
    deltas equal `decode(all_tokens)`.
    """

    def __init__(self, decode: Callable[[list[int]], str], context: int = 3, max_pending: int = 8) -> None:
        self._decode = decode
        self._context_len = context
        self._max_pending = max_pending
        self._context: list[int] = []
        self._context_text = ""
        self._pending: list[int] = []
        self.text = ""

    def add(self, token: int) -> str:
        """Feed one token id; return the newly complete text (possibly empty)."""
        self._pending.append(token)
        text = self._decode(self._context + self._pending)
        if text.endswith(REPLACEMENT) and len(self._pending) < self._max_pending:
            return ""
        return self._emit(text)

    def finalize(self) -> str:
        """Flush whatever is pending (an incomplete character comes out as U+FFFD)."""
        if not self._pending:
            return ""
        return self._emit(self._decode(self._context + self._pending))

    def _emit(self, text: str) -> str:
        delta = text[len(self._context_text):] if text.startswith(self._context_text) else text
        seen = self._context + self._pending
        self._pending = []
        # Keep the shortest clean suffix (decodes without U+FFFD) of at least `context` tokens.
        shortest = min(self._context_len, len(seen))
        for n in range(shortest, min(len(seen), shortest + 4) + 1):
            self._context = seen[-n:]
            self._context_text = self._decode(self._context)
            if REPLACEMENT not in self._context_text:
                break
        self.text += delta
        return delta


class Detokenizer(Protocol):
    """What generation streams text through."""

    text: str

    def add(self, token: int) -> str:
        """Feed one token id; return the newly complete text (possibly empty)."""
        ...

    def finalize(self) -> str:
        """Flush what is pending at the end."""
        ...


class DecodeStreamDetokenizer:
    """The `tokenizers` library's own streaming decoder (`DecodeStream`, in Rust) for
    `tokenizer.json` tokenizers; `finalize` releases what it still holds back (an
    incomplete character at the very end), so the deltas join to the full decode."""

    def __init__(self, tokenizer: Any, decode: Callable[[list[int]], str]) -> None:
        from tokenizers.decoders import DecodeStream

        self._tokenizer, self._decode = tokenizer, decode
        self._stream = DecodeStream(skip_special_tokens=True)
        self._ids: list[int] = []
        self.text = ""

    def add(self, token: int) -> str:
        self._ids.append(token)
        try:
            delta = self._stream.step(self._tokenizer, token) or ""
        except Exception:  # noqa: BLE001 (it refuses a stray byte piece before a word: "Invalid prefix encountered")
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)  # the stray bytes are dropped; the text goes on
            delta = self._stream.step(self._tokenizer, token) or ""
        self.text += delta
        return delta

    def finalize(self) -> str:
        full = self._decode(self._ids)
        delta = full[len(self.text):] if full.startswith(self.text) else ""
        self.text += delta
        return delta
