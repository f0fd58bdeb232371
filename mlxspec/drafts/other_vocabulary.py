"""A draft model with another tokenizer. Both models meet on the text: the draft reads the
verified text spelled in its own tokens, and what it proposes is turned into target tokens,
which the target verifies as usual, so the output is the target's in both modes:

- greedy: the draft writes a few tokens of its own; their text, after the last verified
  target tokens, is re-spelled by the target's tokenizer, and the target tokens whose text
  is settled (all but the last) are proposed;
- sampling: token-level intersection (Timor et al., ICML 2025): the draft's distribution
  restricted to its tokens whose bytes are also a target token, renormalised and mapped to
  those target ids, is the q of ordinary rejection sampling, so the output follows the
  target's distribution exactly. It costs acceptance where the target would pick a token
  the draft cannot spell in one piece.

After each round the draft's tokens are re-spelled over a few tokens of look-back and its
cache rolled back to where they still agree, so it always reads the text as its tokenizer
would write it."""

from __future__ import annotations

import math

import mlx.core as mx

from ..errors import InputError
from ..models import KVQuantization, Model, SubsetHead, fingerprint, kv_keyword, layer_caches
from ..text import Tokenizer
from ..text.spelling import complete_length, is_byte_piece, spell
from .model_draft import last_logits, warn_if_not_smaller
from .protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal

LOOKBACK = 4  # tokens re-spelled before new text: enough for the merges at a boundary,
LOOKBACK_BYTES = 24  # and at least this much text (a special token's name, written out)


def spelling_ids(token_bytes: list[bytes | None], pieces: list[str | None]) -> dict[bytes, int]:
    """The target id a draft token spelling these bytes becomes: where several target tokens
    spell the same bytes (SentencePiece's `,` and its byte fallback `<0x2C>`), the one the
    tokenizer writes text with (not the byte token, which a trained model rarely predicts),
    else the lowest."""
    fallback = [is_byte_piece(pieces[i] if i < len(pieces) else None) for i in range(len(token_bytes))]
    ids: dict[bytes, int] = {}
    for i, b in enumerate(token_bytes):
        if b and (b not in ids or fallback[ids[b]] and not fallback[i]):
            ids[b] = i
    return ids


class OtherVocabularyDraft:
    """A draft model, its tokenizer and the target's: the bytes of every token of both, and
    the tokens they share (same bytes), which sampling proposes from."""

    def __init__(self, model: Model, tokenizer: Tokenizer, target_tokenizer: Tokenizer) -> None:
        self.model, self.tokenizer, self.target_tokenizer = model, tokenizer, target_tokenizer
        self.draft_bytes = tokenizer.token_bytes()
        self.target_bytes = target_tokenizer.token_bytes()
        by_bytes = spelling_ids(self.target_bytes, target_tokenizer.pieces())
        # the draft ids its head scores (a subset head scores only its `token_ids`), by row
        head = getattr(model, "lm_head", None)
        scored = head.token_ids.tolist() if isinstance(head, SubsetHead) else list(range(model.args.vocab_size))
        self.head_ids = mx.array(scored, dtype=mx.int32)
        spelled = lambda d: self.draft_bytes[d] if d < len(self.draft_bytes) else None  # noqa: E731
        shared = [(row, by_bytes[spelled(d)]) for row, d in enumerate(scored) if spelled(d) in by_bytes]
        if not shared:
            raise InputError("the draft's vocabulary shares no token with the target's (no token spells the same "
                             "bytes in both): it cannot draft for this target")
        # what the draft reads for each target token: control tokens as written, BOS as nothing
        pieces = target_tokenizer.pieces()
        self.target_text = [b if b is not None else b"" if i == target_tokenizer.bos_id else
                            (pieces[i] or "").encode("utf-8") for i, b in enumerate(self.target_bytes)]
        self.shared_rows = mx.array([r for r, _ in shared], dtype=mx.int32)  # head rows of the shared tokens
        self.shared_target = mx.array([t for _, t in shared], dtype=mx.int32)

    @property
    def args(self):
        """The draft model's configuration."""
        return self.model.args

    # the draft kind (`mlxspec.drafts.kind.DraftKind`)
    batches = False
    reads_features = False
    timed = property(lambda self: self)
    token_model = None

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> OtherVocabularyDrafter:
        return OtherVocabularyDrafter(self, k_max, chunk, greedy, kv)

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        raise NotImplementedError("a draft with another vocabulary does not batch")

    def check(self, target: Model, num_draft_tokens: int) -> None:
        warn_if_not_smaller(self.model, target)

    def vocabulary(self, target: Model) -> int:
        return target.args.vocab_size

    def fingerprint(self) -> dict:
        return {"other-vocabulary": fingerprint(self.model), "shared": self.shared_rows.size}

    def describe(self) -> str:
        """One line saying what this draft is."""
        return (f"draft model with another vocabulary ({len(self.draft_bytes)} tokens, "
                f"{self.shared_rows.size} it scores shared with the target's {len(self.target_bytes)}), "
                f"{self.model.args.num_hidden_layers} blocks")


class TextTrack:
    """A tokenizer's spelling of a growing text: token ids and where each ends, re-spelled
    over the last few tokens whenever text is added."""

    def __init__(self, tokenizer: Tokenizer, token_bytes: list[bytes | None]) -> None:
        self.encode = lambda s: tokenizer.encode(s, add_bos=False)
        self.token_bytes = token_bytes
        first = tokenizer.bos_id if tokenizer.encode("a", add_bos=True)[:1] == [tokenizer.bos_id] else None
        self.ids: list[int] = [] if first is None else [first]
        self.ends: list[int] = [0] * len(self.ids)
        self.fixed = len(self.ids)  # the BOS is never re-spelled

    def respell(self, text: bytes) -> int:
        """Spell `text` (which extends what was spelled before); returns how many of the old
        ids still stand."""
        s = max(self.fixed, len(self.ids) - LOOKBACK)
        while s > self.fixed and (not _starts_character(text, self.ends[s - 1])
                                  or self.ends[s - 1] > len(text) - LOOKBACK_BYTES):
            s -= 1
        start = self.ends[s - 1] if s > self.fixed else 0
        ids, ends = spell(self.encode, self.token_bytes, text[start : complete_length(text)])
        keep = 0
        while s + keep < len(self.ids) and keep < len(ids) and self.ids[s + keep] == ids[keep] \
                and self.ends[s + keep] == start + ends[keep]:
            keep += 1
        self.ids = self.ids[: s + keep] + ids[keep:]
        self.ends = self.ends[: s + keep] + [start + e for e in ends[keep:]]
        return s + keep


def _starts_character(text: bytes, at: int) -> bool:
    return at >= len(text) or not 0x80 <= text[at] < 0xC0


class OtherVocabularyDrafter:
    """Drafting with an `OtherVocabularyDraft`; `greedy` picks the mode (see the module)."""

    mode = "draft model (other vocabulary)"
    feature_layers = None
    varies = False

    def __init__(self, draft: OtherVocabularyDraft, k_max: int, chunk: int, greedy: bool,
                 kv: KVQuantization | None = None) -> None:
        self.draft, self.chunk, self.greedy = draft, chunk, greedy
        self.most = 2 * k_max + 2  # draft tokens written per greedy round
        rollback = self.most + LOOKBACK + LOOKBACK_BYTES + 4
        self.cache = layer_caches(draft.model.make_cache(max_rollback=rollback, **kv_keyword(kv)))
        self.track = TextTrack(draft.tokenizer, draft.draft_bytes)
        self.fed = 0  # how many of track.ids the cache holds
        self.text = bytearray()
        self.target_ids: list[int] = []
        self.target_ends: list[int] = []
        self.generated = 0  # draft positions a round wrote into the cache beyond the text
        self.bos = draft.target_tokenizer.bos_id

    def outlook(self, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def extend(self, tokens: list[int], features: mx.array | None = None) -> None:
        for t in tokens:
            self.text += self.draft.target_text[t] if 0 <= t < len(self.draft.target_text) else b""
            self.target_ids.append(t)
            self.target_ends.append(len(self.text))

    def _catch_up(self) -> mx.array:
        """Re-spell the verified text, roll the cache back to where it still agrees, feed the
        rest; the draft's logits after the whole text [1, V]."""
        keep = self.track.respell(bytes(self.text))
        if not self.track.ids:  # nothing the draft can read yet (a prompt of control tokens only)
            return mx.zeros((1, self.draft.head_ids.size))
        back = max(0, self.fed - keep)
        if self.fed - back >= len(self.track.ids):  # nothing new: feed the last token again for its logits
            back = self.fed - len(self.track.ids) + 1
        if back:
            self.cache.rollback(back)
            self.fed -= back
        feed = self.track.ids[self.fed :]
        for s in range(0, len(feed) - self.chunk, self.chunk):
            self.draft.model.model(mx.array([feed[s : s + self.chunk]]), self.cache)
        tail = feed[(len(feed) - 1) // self.chunk * self.chunk :]
        self.fed = len(self.track.ids)
        return self._logits(mx.array([tail]))

    def _logits(self, tokens: mx.array) -> mx.array:
        """The draft's logits at the last position over its head's rows (`head_ids`)."""
        return last_logits(self.draft.model, tokens, self.cache)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        self.extend([last])
        logits = self._catch_up()
        return self._greedy(logits, k, pick) if self.greedy else self._intersection(logits, k, pick)

    def _ratio(self) -> float:
        """Draft tokens per target token over the text so far."""
        return min(3.0, max(0.5, len(self.track.ids) / max(1, len(self.target_ids))))

    def _greedy(self, logits: mx.array, k: int, pick: Pick) -> Proposal:
        """Write draft tokens greedily; propose the settled target spelling of their text."""
        m = min(self.most, max(2, math.ceil(k * self._ratio()) + 1))
        tokens: list[mx.array] = []
        for i in range(m):
            if i:
                logits = self._logits(tokens[-1])
            tokens.append(self.draft.head_ids[pick(logits)[0]])
            mx.async_eval(tokens[-1])
        self.generated = m - 1
        text = b""
        for t in mx.concatenate(tokens, axis=1)[0].tolist():
            if t in self.draft.tokenizer.eos_ids:
                break
            text += (self.draft.draft_bytes[t] if t < len(self.draft.draft_bytes) else None) or b""
        ids = self._target_spelling(text)[:k]
        return Proposal(mx.array(ids, dtype=mx.int32).reshape(1, len(ids)), None, None)

    def _target_spelling(self, drafted: bytes) -> list[int]:
        """Target tokens that continue the verified ones with `drafted`, spelled with the last
        few verified tokens in front (so that merges at the boundary come out as the target's
        tokenizer makes them); the last one is left out (its text may go on)."""
        base = 1 if self.target_ids[:1] == [self.bos] and self.bos is not None else 0
        w = max(base, len(self.target_ids) - LOOKBACK)
        while w > base and not _starts_character(self.text, self.target_ends[w - 1]):
            w -= 1
        start = self.target_ends[w - 1] if w else 0
        window = self.target_ids[w:]
        tail = bytes(self.text[start:]) + drafted
        encode = lambda text: self.draft.target_tokenizer.encode(text, add_bos=False)  # noqa: E731
        ids, _ = spell(encode, self.draft.target_bytes, tail[: complete_length(tail)])
        if ids[: len(window)] == window:
            return ids[len(window) : -1]
        return spell(encode, self.draft.target_bytes, drafted[: complete_length(drafted)])[0][:-1]

    def _intersection(self, logits: mx.array, k: int, pick: Pick) -> Proposal:
        """Sample k shared tokens from the draft's restricted distribution (its q over them)."""
        rows, shared_target = self.draft.shared_rows, self.draft.shared_target
        tokens, logprobs, token = [], [], None
        for i in range(k):
            if token is not None:
                logits = self._logits(token)
            choice, lp = pick(logits[:, rows])
            token = self.draft.head_ids[rows[choice]]
            tokens.append(shared_target[choice])
            logprobs.append(lp)
            mx.async_eval(tokens[-1])
        self.generated = k - 1
        return Proposal(mx.concatenate(tokens, axis=1), mx.stack(logprobs, axis=1), shared_target)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None = None) -> None:
        if self.generated:  # the draft's own tokens give way to the verified text
            self.cache.rollback(self.generated)
            self.generated = 0
        self.extend(drafted[:accepted])
