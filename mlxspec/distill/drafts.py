"""The two kinds of draft `mlxspec distill` trains, how each starts and what it learns.

- feature (EAGLE, Li et al. 2024): `fc([embed(x_{t+1}); f_t])` -> blocks -> norm predicts the
  target's next feature f_{t+1}; the target's head over a subset of frequent tokens scores it.
  It starts as a token-only draft: fc = [I, 0], blocks and norm copied from the target's first
  blocks and final norm. With `feature_layers` (EAGLE-3) f_t is fused with the outputs of
  those target blocks; `fuse` starts as [I, 0, ...], i.e. reading f_t alone.
- model: a small model of the target's own vocabulary: the target's embedding, its first
  blocks and final norm, and its head over the subset; it learns to predict the target's
  next-token distribution from tokens alone.

Both learn the target's distribution at every position of its own answers (cross-entropy
to softmax(head(f)) over the subset). A feature draft also regresses the next feature and,
with `unroll` > 1, is trained on its own predicted features for the later positions
(EAGLE-3's "training-time test"): drafting position j reads features the draft itself
predicted, so that is what it must learn to read.
"""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from ..drafts import FeatureDraft
from ..drafts.feature import target_subset_head
from ..errors import InputError
from ..load import dequantize_weights
from ..models import Model
from ..validate import is_int

KINDS = ("feature", "model")


def feature_layers_for(spec: str | list[int] | None, depth: int) -> list[int] | None:
    """The target blocks a feature draft reads beside the final feature: None / "none", the
    final feature alone; "auto", EAGLE-3's low, middle and high blocks (2, depth // 2,
    depth - 3, those that exist); or the given ascending block indices, checked."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return sorted({i for i in (2, depth // 2, depth - 3) if 0 <= i < depth - 1}) or None
    if (not isinstance(spec, (list, tuple)) or not spec or not all(is_int(i) for i in spec)
            or any(a >= b for a, b in zip(spec, spec[1:])) or spec[0] < 0 or spec[-1] >= depth):
        raise InputError(f"feature layers must be 'none', 'auto' or ascending block indices in 0..{depth - 1} "
                         f"(the target has {depth} blocks), got {spec!r}")
    return list(spec)


def head_subset(tokens: np.ndarray, valid: np.ndarray, size: int, vocab: int, always: list[int]) -> np.ndarray:
    """The `size` tokens the draft's head scores: the most frequent in the answers, plus
    `always` (end-of-sequence tokens); sorted ids."""
    counts = np.bincount(tokens[valid > 0].ravel(), minlength=vocab).astype(np.float64)
    counts[always] = np.inf
    chosen = np.argsort(-counts, kind="stable")[:min(size, vocab)]
    return np.sort(chosen).astype(np.int32)


def new_draft(target: Model, kind: str, layers: int, head_ids: np.ndarray,
              feature_layers: list[int] | None = None) -> nn.Module:
    """A draft of `kind` starting from the target's first `layers` blocks (see above)."""
    dense = target.args.num_local_experts is None  # a MoE target's draft is dense, its blocks start afresh
    args = replace(target.args, num_hidden_layers=layers, head_vocab_size=len(head_ids), quantization=None,
                   tie_word_embeddings=False, model_type=target.args.model_type if dense else "mistral",
                   num_local_experts=None, num_experts_per_tok=None, feature_layers=feature_layers)
    source = dict(tree_flatten(target.parameters()))
    if target.args.quantization:  # lazily: only what the draft copies is ever expanded
        source = dequantize_weights(source, target.args.quantization)
    source = {k: v.astype(mx.float32) for k, v in source.items()}
    blocks = [(k[len("model."):], v) for k, v in source.items()
              if k == "model.norm.weight" or (dense and any(k.startswith(f"model.layers.{i}.") for i in range(layers)))]
    if kind == "feature":
        draft = FeatureDraft(args)
        d = target.args.hidden_size
        weights = blocks + [("fc.weight", mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1)),
                            ("fc.bias", mx.zeros((d,))), ("token_ids", mx.array(head_ids))]
        if feature_layers:
            weights.append(("fuse.weight", mx.concatenate([mx.eye(d), mx.zeros((d, d * len(feature_layers)))], axis=1)))
    else:
        draft = Model(args)
        weights = [(f"model.{k}", v) for k, v in blocks] + [
            ("model.embed_tokens.weight", source["model.embed_tokens.weight"]),
            ("lm_head.out_proj.weight", head_matrix(target, head_ids)), ("lm_head.token_ids", mx.array(head_ids))]
    draft.load_weights(weights, strict=dense)
    if kind == "model":  # the target's embedding and head stay the target's
        draft.model.embed_tokens.freeze()
        draft.lm_head.freeze()
    else:
        draft.freeze(keys=["token_ids"], recurse=False)
    mx.eval(draft.parameters())
    return draft


def head_matrix(target: Model, head_ids: np.ndarray) -> mx.array:
    """The target's output head rows of `head_ids` as a float32 matrix [len(head_ids), d],
    expanded when stored quantized: what the losses score features with."""
    linear = target_subset_head(target, mx.array(head_ids)).out_proj
    if isinstance(linear, nn.QuantizedLinear):
        biases = getattr(linear, "biases", None)
        return mx.dequantize(linear.weight, linear.scales, biases, group_size=linear.group_size,
                             bits=linear.bits).astype(mx.float32)
    return linear.weight.astype(mx.float32)


def _soft_ce(target_logits: mx.array, draft_logits: mx.array) -> mx.array:
    """Cross-entropy of the draft's distribution to the target's, per position."""
    p = mx.softmax(target_logits, axis=-1)
    return -(p * nn.log_softmax(draft_logits, axis=-1)).sum(-1)


def _masked_mean(values: mx.array, mask: mx.array) -> mx.array:
    return (values * mask).sum() / mx.maximum(mask.sum(), 1.0)


def feature_loss(draft: FeatureDraft, embed: nn.Module, head_w: mx.array, features: mx.array, tokens: mx.array,
                 valid: mx.array, noise: mx.array, unroll: int, feature_weight: float = 0.1) -> mx.array:
    """Pairs (fused(f_t) + noise, x_{t+1}) -> f_{t+1}, then `unroll` - 1 more passes in which
    the draft reads its own predictions: (f'_{t+j-1}, x_{t+j}) -> f_{t+j}. Each pass: soft
    cross-entropy of the subset distribution plus smooth-L1 to the true (final) feature;
    passes weighted equally."""
    inputs, total = draft.fused(features[:, :-1]) + noise, 0.0
    for j in range(1, unroll + 1):
        pred = draft(inputs, embed(tokens[:, j:]))
        true = features[:, j:, : pred.shape[-1]]
        d = mx.abs(pred - true)
        l1 = mx.where(d < 1, 0.5 * d * d, d - 0.5).mean(-1)
        total = total + _masked_mean(_soft_ce(true @ head_w.T, pred @ head_w.T) + feature_weight * l1, valid[:, j:])
        inputs = pred[:, :-1]  # the next pass reads these predictions
    return total / unroll


def model_loss(draft: Model, head_w: mx.array, features: mx.array, tokens: mx.array, valid: mx.array) -> mx.array:
    """Tokens -> the target's next-token distribution at every position (over the subset)."""
    logits = draft.lm_head.subset_logits(draft.model(tokens, None))
    return _masked_mean(_soft_ce(features[..., : head_w.shape[-1]] @ head_w.T, logits), valid)
