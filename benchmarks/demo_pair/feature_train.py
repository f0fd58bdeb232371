"""The feature draft's training (distill_features.py): built as a token-only draft, trained
through the target's embedding and subset head towards its next-token distributions and
next features, and checked by teacher-forced top-1 agreement on held-out answers."""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from distill_data import subset_index
from draft_model import draft_args
from mlxspec.drafts import FeatureDraft, target_subset_head
from mlxspec.models import Model
from training import fit


@dataclass(frozen=True)
class TargetView:
    """What the feature draft is trained through: the target's embedding, its head's rows for
    the subset vocabulary [S, D], and token id -> index in the subset (-1 outside)."""

    embed: nn.Module
    head_w: mx.array
    index: np.ndarray


def target_view(target: Model, head_ids: np.ndarray) -> TargetView:
    """The target's parts for the subset vocabulary `head_ids`."""
    head_w = target_subset_head(target, mx.array(head_ids)).out_proj.weight
    return TargetView(target.model.embed_tokens, head_w, subset_index(head_ids, target.args.vocab_size))


def make_feature_draft(target: Model, layers: int, head_ids: np.ndarray, init_from: Path | None) -> FeatureDraft:
    """A feature draft that starts as a token-only draft (fc = [I, 0])."""
    draft = FeatureDraft(draft_args(target, layers, len(head_ids)))
    source = (mx.load(str(init_from / "draft.safetensors")) if init_from else dict(tree_flatten(target.parameters())))
    weights = [(k[len("model."):], v) for k, v in source.items()
               if k == "model.norm.weight" or any(k.startswith(f"model.layers.{i}.") for i in range(layers))]
    d = target.args.hidden_size
    weights += [("fc.weight", mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1)), ("fc.bias", mx.zeros((d,))),
                ("token_ids", mx.array(head_ids))]
    draft.load_weights(weights, strict=True)
    return draft


def continue_from(draft: FeatureDraft, folder: str, head_ids: np.ndarray) -> None:
    """Load an exported feature draft (--init-draft) into `draft`, in float32; exit when its
    head covers other tokens than `head_ids`."""
    saved = mx.load(str(Path(folder) / "model.safetensors"))  # float16 as exported: train in float32
    draft.load_weights([(k, v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v)
                        for k, v in saved.items()], strict=True)
    if not np.array_equal(np.array(draft.token_ids), head_ids):
        sys.exit(f"{folder}: its head covers other tokens than this data's subset")
    mx.eval(draft.parameters())


def loss_fn(draft: FeatureDraft, embed: nn.Module, head_w: mx.array, features: mx.array, tokens: mx.array,
            valid: mx.array, noise: mx.array, feature_weight: float) -> mx.array:
    """Pairs (f_t + noise, x_{t+1}) -> f_{t+1}: cross-entropy of the head's subset distribution
    to the target's, plus smooth-L1 between predicted and true features."""
    pred = draft(features[:, :-1] + noise, embed(tokens[:, 1:]))
    true, v = features[:, 1:], valid[:, 1:]
    p = mx.softmax(true @ head_w.T, axis=-1)
    ce = -(p * nn.log_softmax(pred @ head_w.T, axis=-1)).sum(-1)
    d = mx.abs(pred - true)
    l1 = mx.where(d < 1, 0.5 * d * d, d - 0.5).mean(-1)
    return ((ce + feature_weight * l1) * v).sum() / mx.maximum(v.sum(), 1.0)


def top1(draft: FeatureDraft, view: TargetView, features: np.ndarray, tokens: np.ndarray,
         scored: np.ndarray) -> float:
    """Teacher-forced agreement of the draft's next token with the teacher's greedy answer."""
    hits, total = 0, 0
    for f, t, m in zip(features, tokens, scored):
        pred = draft(mx.array(f[None, :-1].astype(np.float32)), view.embed(mx.array(t[None, 1:])))
        guess = np.array(mx.argmax(pred @ view.head_w.T, axis=-1))[0]  # predicts x_{t+2}
        # position t+1 is scored when the teacher's greedy answer continues there
        sel = m[1:-1] > 0
        hits += int((guess[:-1][sel] == view.index[t[2:][sel]]).sum())
        total += int(sel.sum())
    return hits / max(total, 1)


def feature_batches(args: argparse.Namespace, feats: np.ndarray, tokens: np.ndarray, valid: np.ndarray,
                    rng: random.Random) -> Iterator[tuple[mx.array, ...]]:
    """Endless batches (features, tokens, valid mask, --noise for the input features): each
    pass over the rows in a fresh shuffled order, a batch's rows in index order."""
    order, pos = [], 0
    while True:
        if pos + args.batch > len(order):
            order, pos = list(range(len(tokens))), 0
            rng.shuffle(order)
        idx = sorted(order[pos:pos + args.batch])
        pos += args.batch
        f = mx.array(feats[idx].astype(np.float32))
        noise = args.noise * mx.random.normal((f.shape[0], f.shape[1] - 1, f.shape[2]))
        yield f, mx.array(tokens[idx]), mx.array(valid[idx]), noise


def train(args: argparse.Namespace, draft: FeatureDraft, view: TargetView, feats: np.ndarray, tokens: np.ndarray,
          valid: np.ndarray, held: tuple[np.ndarray, np.ndarray, np.ndarray], run_dir: Path) -> list[dict]:
    """Train everything but the head's token ids; log held-out top-1 (`held`: features,
    tokens, scored mask) every --eval-every steps."""
    draft.freeze(keys=["token_ids"], recurse=False)

    def loss(model: FeatureDraft, f: mx.array, t: mx.array, v: mx.array, noise: mx.array) -> mx.array:
        return loss_fn(model, view.embed, view.head_w, f, t, v, noise, args.feature_weight)

    def report(step: int, running: float) -> dict:
        entry = {"step": step, "train_loss": running, "held_top1": top1(draft, view, *held)}
        print(f"\nstep {step}: train loss {running:.3f}, held-out top-1 {entry['held_top1']:.3f}", file=sys.stderr)
        return entry

    return fit(args, draft, loss, lambda rng: feature_batches(args, feats, tokens, valid, rng),
               "training the feature draft", report, run_dir)
