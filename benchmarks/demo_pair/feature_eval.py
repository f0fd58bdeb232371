"""The feature draft's final evaluation and export (distill_features.py): greedy speculative
decoding through mlxspec's own loop on held-out answers, and the float16 draft folder."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlxspec.drafts import FeatureDraft, draft_config
from mlxspec.engine import Session
from mlxspec.models import Model
from training import save_draft


def engine_acceptance(target: Model, draft: FeatureDraft, held_rows: list, k: int) -> list[float]:
    """Greedy speculative decoding with mlxspec's loop on each held-out prompt, as long as
    the teacher's own answer: accepted / drafted at each draft position."""
    session = Session(target, None, draft, num_draft_tokens=k, draft_policy="fixed")
    accepted, drafted = np.zeros(k), np.zeros(k)
    for (tokens, _, _, _), p, n_t in held_rows:
        stats = list(session.stream(tokens[:p].tolist(), max_tokens=n_t))[-1].stats
        accepted[:len(stats.accepted_per_position)] += stats.accepted_per_position
        drafted[:len(stats.drafted_per_position)] += stats.drafted_per_position
    return (accepted / np.maximum(drafted, 1)).tolist()


def export(draft: FeatureDraft, out: Path, info: dict) -> None:
    """The draft folder: float16 weights, config.json (`"draft_type": "eagle"`), training.json."""
    weights = {k: v.astype(mx.float16) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in tree_flatten(draft.parameters())}
    save_draft(out, weights, draft_config(draft), info)
