"""The training data: the target's own answers to the prompts, decoded in batches, with its
final hidden states ("features") at every position kept from the decode itself (followed,
for a multi-layer feature draft, by the outputs of the blocks it reads: `taps`).

A batch's prompts are left-padded to one width and decoded together (greedy for two
batches in three, sampled for the third: the draft meets both kinds of text). Each batch
is written to the work folder as soon as it is done, so a killed run loses at most one
batch. The target's next-token distribution at any position is its head applied to the
feature there, so features are all a draft of either kind needs.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np

from ..drafts.feature import normalised_taps
from ..models import KVCache, Model
from ..models.mistral import run_blocks
from ..text import Tokenizer
from .answer_store import discard, done_batches, intact, is_done, read_batches, write_batch
from .prompts_file import Prompt

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def answers_folder(cache: Path, target: Path, prompts: list[Prompt], settings: dict[str, Any],
                   taps: tuple[int, ...] = ()) -> tuple[Path, tuple[int, ...]]:
    """Where the answers to `prompts` by the target in folder `target` under `settings` are
    kept, and which blocks' outputs that folder's features hold: `cache/distill-answers/<key>`,
    the key covering the target's weight files (name, size, time), the prompts, the settings
    and `taps`, so that runs trying other drafts on the same data share it, and a changed
    target or prompt set never reuses stale answers. The answers differ in nothing else, so a
    folder holding more blocks (a multi-layer feature draft's answers, for a model draft or
    one reading fewer blocks) is used instead when it has answered more batches."""
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in target.glob("*.safetensors"))
    data = [str(target.resolve()), weights, prompts]
    exact = cache / "distill-answers" / _digest([*data, {**settings, **({"taps": list(taps)} if taps else {})}])
    identity = _digest([*data, settings])  # the same answers, whichever blocks' outputs were kept
    choices = [(exact, taps)]
    for record in sorted(exact.parent.glob("*/key.json")):
        kept = _read_key(record)
        if kept.get("identity") == identity and set(taps) <= set(kept["taps"]) and record.parent != exact:
            choices.append((record.parent, tuple(kept["taps"])))
    folder, held = max(choices, key=lambda choice: done_batches(choice[0]))  # the first of equals: exact
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "key.json").is_file():
        (folder / "key.tmp.json").write_text(json.dumps({"identity": identity, "taps": list(held)}))
        (folder / "key.tmp.json").replace(folder / "key.json")
    return folder, held


def _read_key(record: Path) -> dict:
    """A folder's key.json, or {} when it cannot be read (then the folder is not shared)."""
    try:
        kept = json.loads(record.read_text())
        return kept if isinstance(kept, dict) and isinstance(kept.get("taps"), list) else {}
    except (OSError, ValueError):
        return {}


def _digest(key: list) -> str:
    """A short hash of `key` and of the way answers are made (the marker changes with it)."""
    marked = [*key, "batches by length in blocks"]
    return hashlib.sha256(json.dumps(marked, sort_keys=True, default=str).encode()).hexdigest()[:20]


def tap_columns(held: tuple[int, ...], wanted: tuple[int, ...], width: int) -> np.ndarray | None:
    """The columns of features holding the final states and blocks `held` (each `width`
    wide) that give the final states and blocks `wanted`; None when they are all of them."""
    if tuple(held) == tuple(wanted):
        return None
    spans = [range(0, width)] + [range((1 + held.index(t)) * width, (2 + held.index(t)) * width) for t in wanted]
    return np.concatenate([np.arange(s.start, s.stop) for s in spans])


def left_pad(prompts: list[list[int]], max_new: int) -> tuple[np.ndarray, mx.array]:
    """Prompts left-padded to one width [B, W], and which positions hold real tokens
    [B, W + max_new]."""
    width = max(len(p) for p in prompts)
    padded = np.zeros((len(prompts), width), np.int32)
    keep = np.zeros((len(prompts), width + max_new), bool)
    for r, p in enumerate(prompts):
        padded[r, width - len(p):] = p
        keep[r, width - len(p):] = True
    return padded, mx.array(keep)


def padded_features(target: Model, tokens: mx.array, cache: list, keep: mx.array,
                    taps: tuple[int, ...] = ()) -> mx.array:
    """Final hidden states of a left-padded batch over growing caches (the outputs of blocks
    `taps` after them, as `MistralModel` gives them): real queries never see padding (nor,
    with a sliding window, keys that left it), a padding query sees only itself; RoPE is
    relative, so each row computes what it would alone."""
    n = tokens.shape[1]
    end = cache[0].offset + n
    q_pos, k_pos = mx.arange(end - n, end)[:, None], mx.arange(end)[None]
    seen = k_pos <= q_pos
    if target.args.sliding_window is not None:
        seen = seen & (k_pos > q_pos - target.args.sliding_window)
    mask = seen[None, None] & (keep[:, None, None, :end] | (k_pos == q_pos)[None, None])
    return target.model.final_norm(run_blocks(target.layers, target.model.embed_tokens(tokens), mask, cache, taps))


def answer_batch(target: Model, prompts: list[list[int]], greedy: bool, max_new: int, eos: set[int],
                 seq_len: int, taps: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """One batch answered, as training rows: the last `seq_len` positions of prompt + answer
    (tokens, float16 features, valid mask), right-padded."""
    padded, keep = left_pad(prompts, max_new)
    width, cache = padded.shape[1], [KVCache() for _ in target.layers]  # the mask above bands a window
    d = target.args.hidden_size
    h = padded_features(target, mx.array(padded), cache, keep, taps)
    feats, tokens = [_stored(h, d, target.args.rms_norm_eps)], []
    lengths, done = np.full(len(prompts), max_new), np.zeros(len(prompts), bool)
    for t in range(max_new):
        logits = target.head(h[:, -1, :d])
        nxt = mx.argmax(logits, axis=-1) if greedy else mx.random.categorical(logits)
        h = padded_features(target, nxt[:, None], cache, keep, taps)
        mx.eval(nxt, h)
        tokens.append(np.array(nxt)), feats.append(_stored(h, d, target.args.rms_norm_eps))
        for r, tok in enumerate(tokens[-1].tolist()):
            if not done[r] and tok in eos:
                done[r], lengths[r] = True, t + 1
        if done.all():
            break
    return _rows(prompts, np.stack(tokens, axis=1), np.concatenate(feats, axis=1), lengths, width, seq_len)


def _stored(h: mx.array, d: int, eps: float) -> np.ndarray:
    """Hidden states as kept: float16, the tapped blocks' outputs RMS-normalised first (a
    draft reads them normalised; raw, a residual stream's large activations can pass float16's
    range)."""
    return np.array(normalised_taps(h, d, eps).astype(mx.float16))


def _rows(prompts: list[list[int]], gen: np.ndarray, feats: np.ndarray, lengths: np.ndarray, width: int,
          seq_len: int) -> dict[str, np.ndarray]:
    rows = len(prompts)
    out = {"tokens": np.zeros((rows, seq_len), np.int32), "valid": np.zeros((rows, seq_len), np.float32),
           "features": np.zeros((rows, seq_len, feats.shape[-1]), np.float16)}
    for r, p in enumerate(prompts):
        seq = np.concatenate([p, gen[r, :lengths[r]]])
        f = feats[r, width - len(p):width + lengths[r]]
        n = min(len(seq), seq_len)
        out["tokens"][r, :n], out["features"][r, :n], out["valid"][r, :n] = seq[-n:], f[-n:], 1
    return out


def batches_by_length(lengths: list[int], batch: int, span: int = 8) -> list[list[int]]:
    """Prompt indices in batches of `batch`: the prompts (already shuffled) taken `span`
    batches at a time and sorted by length within those, so a batch pads little and a run
    stopped early by its deadline has answered a fair sample, not only the shortest prompts."""
    groups = []
    for start in range(0, len(lengths), batch * span):
        block = sorted(range(start, min(start + batch * span, len(lengths))), key=lambda i: lengths[i])
        groups += [block[i:i + batch] for i in range(0, len(block), batch)]
    return groups


def answer_prompts(target: Model, tokenizer: Tokenizer, prompts: list[Prompt], folder: Path, *, batch: int,
                   max_new: int, seq_len: int, seed: int, deadline: float, progress: Progress,
                   limit: int | None = None, taps: tuple[int, ...] = (),
                   held: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Every batch of `prompts` answered (those in `folder` already are reused), until
    `deadline` (time.monotonic(); the first batch in any case); returns the rows of the
    first `limit` batches (default: all answered so far), as `read_batches` gives them. The
    features hold the (normalised) outputs of blocks `taps` after the final hidden states;
    the folder's hold those of blocks `held` (default: `taps`; see `answers_folder`)."""
    held = taps if held is None else held
    folder.mkdir(parents=True, exist_ok=True)
    ids = [tokenizer.apply_chat(p) for p in prompts]
    groups = batches_by_length([len(i) for i in ids], batch)
    eos = set(tokenizer.eos_ids)
    groups = groups[:limit]
    width = target.args.hidden_size * (1 + len(held))
    for g, group in enumerate(groups):
        if is_done(folder, g) and not intact(folder, g, (len(group), seq_len, width), target.args.vocab_size):
            discard(folder, g)  # damaged on disk: answered again
        if not is_done(folder, g):
            if g and time.monotonic() > deadline:  # the first batch always: there is no training without it
                break
            mx.random.seed(seed * 100003 + g)
            write_batch(folder, g, answer_batch(target, [ids[i] for i in group], g % 3 != 2, max_new, eos, seq_len,
                                                held))
        progress("answering the prompts", g + 1, len(groups))
    return read_batches(folder, len(groups), tap_columns(held, taps, target.args.hidden_size))
