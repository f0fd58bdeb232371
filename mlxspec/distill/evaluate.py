"""How good a distilled draft is, measured two ways on held-out prompts:

- top-1 agreement, teacher-forced on the target's held-out answers: how often the draft's
  most likely next token is the target's (a feature draft reads the true features);
- acceptance per draft position through mlxspec's own speculative loop (fixed k), at T = 0
  and T = 1: what decoding with it will see.
"""

from __future__ import annotations

import time

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..engine import Session
from ..models import Model
from ..text import Tokenizer
from .prompts_file import Prompt


def top1(draft: nn.Module, kind: str, embed: nn.Module, head_w: mx.array, data: dict[str, np.ndarray]) -> float:
    """Teacher-forced agreement with the target's most likely next token (over the subset)."""
    hits, total = 0, 0
    for f, t, v in zip(data["features"], data["tokens"], data["valid"]):
        f = mx.array(f[None].astype(np.float32))
        target_next = np.array(mx.argmax(f[..., : head_w.shape[-1]] @ head_w.T, axis=-1))[0]  # at i: the next token
        if kind == "feature":  # (f_i, x_{i+1}) -> f'_{i+1}, scored against the target at i+1
            guess = np.array(mx.argmax(draft(draft.fused(f[:, :-1]), embed(mx.array(t[None, 1:]))) @ head_w.T,
                                       axis=-1))[0]
            truth, mask = target_next[1:], v[1:] > 0
        else:
            guess = np.array(mx.argmax(draft.lm_head.subset_logits(draft.model(mx.array(t[None]), None)), axis=-1))[0]
            truth, mask = target_next, v > 0
        hits += int((guess[mask] == truth[mask]).sum())
        total += int(mask.sum())
    return hits / max(total, 1)


def acceptance(target: Model, tokenizer: Tokenizer, draft: nn.Module, prompts: list[Prompt], k: int,
               temperature: float, tokens: int, deadline: float) -> list[float]:
    """Accepted / drafted at each of k draft positions over the held-out prompts (as many as
    `deadline` allows, at least one), decoding `tokens` tokens each with a fixed k."""
    session = Session(target, tokenizer, draft, num_draft_tokens=k, draft_policy="fixed", prompt_cache_entries=0)
    accepted, drafted = np.zeros(k), np.zeros(k)
    for i, prompt in enumerate(prompts):
        if i and time.monotonic() > deadline:
            break
        steps = list(session.stream(prompt, max_tokens=tokens, temperature=temperature, seed=i, chat=True))
        stats = steps[-1].stats
        accepted[:len(stats.accepted_per_position)] += stats.accepted_per_position
        drafted[:len(stats.drafted_per_position)] += stats.drafted_per_position
    return [round(float(a), 4) for a in accepted / np.maximum(drafted, 1)]
