"""The feature draft's data (distill_features.py): the target's final hidden states for
distill.py's rows, for more standard-library rows, and for the teacher's answers to the
second prompt set, kept while decoding them."""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxspec.models import KVCache, Model
from mlxspec.text import Tokenizer
from prompt_sets import more_prompts
from stdlib_text import stdlib_pieces
from teacher import ended, left_pad, padded_features
from training import progress


def rows_of(examples: list) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [N, T] and the valid-position mask [N, T] (up to the last scored position)."""
    tokens = np.stack([r[0] for r in examples])
    valid = np.zeros(tokens.shape, np.float32)
    for i, (_, _, _, mask) in enumerate(examples):
        valid[i, : np.nonzero(mask)[0][-1] + 1] = 1
    return tokens, valid


def target_features(target: Model, tokens: np.ndarray, path: Path, batch: int = 8) -> np.ndarray:
    """The target's final hidden states for every row (cached in `path`)."""
    if path.is_file():
        return np.load(path)["features"]
    out = np.zeros((*tokens.shape, target.args.hidden_size), np.float16)
    start = time.time()
    for i in range(0, len(tokens), batch):
        h = target.model(mx.array(tokens[i:i + batch]), None)
        out[i:i + batch] = np.array(h.astype(mx.float16))
        progress("target features", min(i + batch, len(tokens)), len(tokens),
                 f"{(i + batch) * tokens.shape[1] / (time.time() - start):.0f} tok/s")
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=out)
    tmp.replace(path)
    return out


def extra_text(tokenizer: Tokenizer, seq_len: int, chunks: int, seed: int) -> np.ndarray:
    """`chunks` more rows of standard-library source: the parts of each file past the
    pieces distill.py scored (its first four per file), never from its held-out files."""
    rows = [piece for held_out, pieces in stdlib_pieces(tokenizer, seq_len) if not held_out for piece in pieces[4:]]
    rows = np.array(rows, dtype=np.int32)
    return rows[np.random.default_rng(seed).permutation(len(rows))][:chunks]


def answer_with_features(target: Model, prompts: list[list[int]], greedy: bool, max_new: int,
                         temperature: float, eos: set[int], seq_len: int) -> dict[str, np.ndarray]:
    """The teacher's answers to a batch of prompts (left-padded, one batched decode) with its
    features at every position, kept as training rows: the last `seq_len` positions of
    prompt + answer (tokens, float16 features, valid mask), right-padded. The features come
    from the decode itself, so no second pass over the text is needed."""
    rows = len(prompts)
    padded, keep = left_pad(prompts, max_new)
    width = padded.shape[1]
    cache = [KVCache() for _ in target.layers]  # padded_features masks over growing caches
    h = padded_features(target, mx.array(padded), cache, keep)
    feats, tokens = [np.array(h.astype(mx.float16))], []
    lengths = np.full(rows, max_new)
    done = np.zeros(rows, dtype=bool)
    for t in range(max_new):
        logits = target.head(h[:, -1])
        nxt = mx.argmax(logits, axis=-1) if greedy else mx.random.categorical(logits / temperature)
        h = padded_features(target, nxt[:, None], cache, keep)  # the answer's token t: its feature
        mx.eval(nxt, h)
        tokens.append(np.array(nxt)), feats.append(np.array(h.astype(mx.float16)))
        if ended(tokens[-1], t, eos, done, lengths):
            break
    gen, feats = np.stack(tokens, axis=1), np.concatenate(feats, axis=1)
    out_tokens = np.zeros((rows, seq_len), np.int32)
    out_feats = np.zeros((rows, seq_len, feats.shape[-1]), np.float16)
    valid = np.zeros((rows, seq_len), np.float32)
    for r, p in enumerate(prompts):
        seq = np.concatenate([p, gen[r, :lengths[r]]])
        f = feats[r, width - len(p):width + lengths[r]]
        n = min(len(seq), seq_len)
        out_tokens[r, :n], out_feats[r, :n], valid[r, :n] = seq[-n:], f[-n:], 1
    return {"tokens": out_tokens, "features": out_feats, "valid": valid, "greedy": np.array(greedy)}


def more_answers(target: Model, tokenizer: Tokenizer, work: Path, count: int, batch: int, max_new: int,
                 temperature: float, seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase 1b: the first `count` batches of the teacher's answers to the second prompt
    set (`prompt_sets.more_prompts`), with features (WORKDIR/feature-answers/NNNNN.npz, one
    per batch; reused). A batch holds prompts of similar length (padding costs little); the
    batches come in a seeded random order, so any first `count` are a fair sample of the
    set. Two batches in three are greedy, one sampled. Returns their rows."""
    out_dir = work / "feature-answers"
    out_dir.mkdir(parents=True, exist_ok=True)
    eos = set(tokenizer.eos_ids)
    prompts = [tokenizer.apply_chat(p) for p in more_prompts(seed)]
    window = 8 * batch
    groups = []
    for w in range(0, len(prompts), window):
        by_length = sorted(range(w, min(w + window, len(prompts))), key=lambda i: len(prompts[i]))
        groups += [by_length[i:i + batch] for i in range(0, len(by_length), batch)]
    random.Random(seed).shuffle(groups)
    if count > len(groups):
        sys.exit(f"--answers {count}: the second prompt set makes only {len(groups)} batches of {batch}")
    todo = [g for g in range(count) if not (out_dir / f"{g:05d}.npz").is_file()]
    start, made = time.time(), 0
    for n, g in enumerate(todo):
        mx.random.seed(seed * 100003 + g)
        data = answer_with_features(target, [prompts[i] for i in groups[g]], g % 3 != 2, max_new, temperature,
                                    eos, seq_len)
        tmp = out_dir / f"{g:05d}.tmp.npz"
        np.savez(tmp, **data)
        tmp.replace(out_dir / f"{g:05d}.npz")
        made += int(data["valid"].sum())
        progress("teacher answers with features", count - len(todo) + n + 1, count,
                 f"{made / (time.time() - start):.0f} positions/s")
    parts = [np.load(out_dir / f"{g:05d}.npz") for g in range(count)]
    return (np.concatenate([d["tokens"] for d in parts]), np.concatenate([d["valid"] for d in parts]),
            np.concatenate([d["features"] for d in parts]))


def feature_rows(args: argparse.Namespace, target: Model, tokenizer: Tokenizer, data: dict,
                 work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (tokens, valid mask, features): distill.py's, then --extra-chunks rows
    of standard-library source, then --answers batches of answers to the second prompt set."""
    tokens, valid = rows_of(data["train"])
    feats = target_features(target, tokens, work / "features.npz")
    if args.extra_chunks:
        extra = extra_text(tokenizer, args.seq_len, args.extra_chunks, args.seed)
        extra_feats = target_features(target, extra, work / f"features-extra-{len(extra)}.npz")
        tokens, valid = np.concatenate([tokens, extra]), np.concatenate([valid, np.ones(extra.shape, np.float32)])
        feats = np.concatenate([feats, extra_feats])
    if args.answers:
        more_tokens, more_valid, more_feats = more_answers(target, tokenizer, work, args.answers, args.answer_batch,
                                                           args.max_new, args.sample_temperature, args.seq_len,
                                                           args.seed)
        tokens, valid = np.concatenate([tokens, more_tokens]), np.concatenate([valid, more_valid])
        feats = np.concatenate([feats, more_feats])
    return tokens, valid, feats


def held_rows(target: Model, data: dict, work: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The held-out greedy answers: (features, tokens, mask of the scored positions)."""
    held_tokens = np.stack([r[0] for r, _, _ in data["held_greedy"]])
    held_scored = np.stack([r[3] for r, _, _ in data["held_greedy"]])
    return target_features(target, held_tokens, work / "features-held.npz"), held_tokens, held_scored
