"""distill.py's data in the work folder: phase 1 writes the teacher's answers (answers/) and
its scores of standard-library chunks (stdlib.npz); phase 2 reads them back as fixed-length
training rows and picks the subset vocabulary the drafts' heads score."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxspec.models import Model
from mlxspec.text import Tokenizer
from prompt_sets import training_prompts
from stdlib_text import stdlib_pieces
from teacher import generate_answers, score_chunks
from training import progress


def build_data(args: argparse.Namespace, teacher: Model, tokenizer: Tokenizer) -> None:
    """Phase 1, resumable: whatever is already in --workdir is kept."""
    teacher_answers(args, teacher, tokenizer)
    stdlib_scores(args, teacher, tokenizer)


def teacher_answers(args: argparse.Namespace, teacher: Model, tokenizer: Tokenizer) -> None:
    """The teacher's answers to the training prompts, one file per batch (answers/NNNNN.npz)."""
    work = Path(args.workdir)
    gen_dir = work / "answers"
    gen_dir.mkdir(parents=True, exist_ok=True)
    prompts = training_prompts(args.seed)[: args.prompts]
    (work / "prompts.json").write_text(json.dumps(prompts, indent=0))
    eos = set(tokenizer.eos_ids)
    groups = [list(range(i, min(i + args.batch_prompts, len(prompts)))) for i in range(0, len(prompts), args.batch_prompts)]
    todo = [g for g in range(len(groups)) if not (gen_dir / f"{g:05d}.npz").is_file()]
    start, made = time.time(), 0
    for n, g in enumerate(todo):
        mx.random.seed(args.seed * 100003 + g)
        greedy = g % 3 != 2  # two batches in three greedy (the T=0 target), one sampled
        data = generate_answers(teacher, [tokenizer.apply_chat(prompts[i]) for i in groups[g]], greedy,
                                args.max_new, args.sample_temperature, args.topk, eos)
        tmp = gen_dir / f"{g:05d}.tmp.npz"
        np.savez(tmp, **data)
        tmp.replace(gen_dir / f"{g:05d}.npz")
        made += int(data["lengths"].sum())
        rate = made / (time.time() - start)
        progress("teacher answers", len(groups) - len(todo) + n + 1, len(groups), f"{rate:.0f} tok/s")


def stdlib_scores(args: argparse.Namespace, teacher: Model, tokenizer: Tokenizer) -> None:
    """The teacher's top-k at every position of standard-library chunks: the first four
    pieces of each file, training chunks shuffled, held-out ones from the held-out files."""
    work = Path(args.workdir)
    stdlib_path = work / "stdlib.npz"
    if not stdlib_path.is_file():
        chunks, held = [], []
        for held_out, pieces in stdlib_pieces(tokenizer, args.seq_len):
            (held if held_out else chunks).extend(pieces[:4])
        rng = np.random.default_rng(args.seed)
        chunks = np.array(chunks, dtype=np.int32)[rng.permutation(len(chunks))][: args.stdlib_chunks]
        held = np.array(held, dtype=np.int32)[: max(8, args.stdlib_chunks // 10)]
        t0 = time.time()
        ids, lps = score_chunks(teacher, chunks, args.topk, 8)
        hids, hlps = score_chunks(teacher, held, args.topk, 8)
        print(f"scored {chunks.size + held.size} stdlib tokens in {time.time() - t0:.0f} s", file=sys.stderr)
        np.savez(work / "stdlib.tmp.npz", chunks=chunks, ids=ids, lps=lps, held=held, held_ids=hids, held_lps=hlps)
        (work / "stdlib.tmp.npz").replace(stdlib_path)


def load_examples(work: Path, seq_len: int, held_out_batches: int) -> dict[str, list]:
    """Fixed-length training rows: (tokens [T], target ids [T, K], target logprobs [T, K], mask [T]).
    The last `held_out_batches` greedy answer batches are kept for evaluation."""
    files = sorted((work / "answers").glob("[0-9]*.npz"))
    greedy_files = [f for f in files if bool(np.load(f)["greedy"])]
    held_files = set(greedy_files[len(greedy_files) - held_out_batches:])
    train, held_greedy = [], []
    for f in files:
        d = np.load(f)
        width, k = d["prompt"].shape[1], d["ids"].shape[-1]
        for r in range(d["gen"].shape[0]):
            prompt = d["prompt"][r, width - int(d["prompt_lengths"][r]):]
            p, length = len(prompt), int(d["lengths"][r])
            n_t = min(length, seq_len - p + 1)
            if n_t <= 0:
                continue
            seq = np.concatenate([prompt, d["gen"][r, :length]])[:seq_len]
            tokens = np.zeros(seq_len, np.int32)
            tokens[:len(seq)] = seq
            ids = np.zeros((seq_len, k), np.int32)
            lps = np.full((seq_len, k), -np.inf, np.float16)
            mask = np.zeros(seq_len, np.float32)
            ids[p - 1:p - 1 + n_t], lps[p - 1:p - 1 + n_t] = d["ids"][r, :n_t], d["lps"][r, :n_t]
            mask[p - 1:p - 1 + n_t] = 1
            row = (tokens, ids, lps, mask)
            if f in held_files:
                held_greedy.append((row, p, n_t))
            else:
                train.append(row)
    s = np.load(work / "stdlib.npz")
    for tokens, ids, lps in zip(s["chunks"], s["ids"], s["lps"]):
        train.append((tokens, ids, lps, np.ones(seq_len, np.float32)))
    held_text = [(t, i, l, np.ones(seq_len, np.float32)) for t, i, l in zip(s["held"], s["held_ids"], s["held_lps"])]
    return {"train": train, "held_greedy": held_greedy, "held_text": held_text}


def choose_vocab(train: list, size: int, vocab_size: int, always: list[int]) -> np.ndarray:
    """The `size` tokens holding the most teacher probability mass over the training data."""
    mass = np.zeros(vocab_size)
    for _, ids, lps, mask in train:
        np.add.at(mass, ids[mask > 0].ravel(), np.exp(lps[mask > 0].astype(np.float32)).ravel())
    mass[always] = np.inf
    chosen = np.argsort(-mass, kind="stable")[:size]
    return np.sort(chosen).astype(np.int32)



def head_vocab(train: list, size: int, vocab_size: int, tokenizer: Tokenizer) -> np.ndarray:
    """The subset vocabulary for these rows (`choose_vocab`), the special tokens always in."""
    always = sorted(set(tokenizer.eos_ids) | ({tokenizer.bos_id} if tokenizer.bos_id is not None else set()))
    return choose_vocab(train, size, vocab_size, always)


def subset_index(head_ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """Token id -> its index in the subset vocabulary (-1 outside it)."""
    index = np.full(vocab_size, -1, np.int32)
    index[head_ids] = np.arange(len(head_ids))
    return index
