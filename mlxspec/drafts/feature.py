"""A draft that reads the target's hidden states (EAGLE, Li et al. 2024).

An ordinary draft must guess the next token from tokens alone, with a small fraction of
the target's depth. This one is handed the target's final hidden state ("feature")
f_t at every verified position, which already encodes most of what the target knows:
from the pair (f_t, token x_{t+1}) a few decoder blocks and a final norm predict the
next feature f_{t+1}; the target's own output head, restricted to the most frequent
tokens, turns it into a distribution over x_{t+2}. Drafting further feeds the predicted
feature back in:

    h = fc([embed(x_{t+1}); f_t])  ->  blocks, norm  ->  f'_{t+1}  ->  head  ->  x_{t+2}
    h = fc([embed(x_{t+2}); f'_{t+1}])  ->  ...                              ->  x_{t+3}

The token embedding and the head are the target's (nothing is copied into the draft's
file), so the draft is only `fc`, its blocks and the norm. Exactness does not depend on any of
this: verification treats the draft's distribution like any other.

With `feature_layers` (EAGLE-3, Li et al. 2025) the draft reads more than the top of the
target: the outputs of a few lower blocks, each RMS-normalised, are fused with f_t by a
linear map `fuse` into the d-wide feature `fc` reads. The target computes those outputs
anyway. Positions drafted further read the draft's own prediction in the fused feature's
place, as training (with training-time test) taught it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..errors import InputError
from ..models import Cache, KVCache, Model, ModelArgs, SubsetHead, TransformerBlock
from .protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal, draw_proposal

DRAFT_TYPE = "eagle"


class FeatureDraft(nn.Module):
    """`fc` over [token embedding; feature], a few Mistral blocks and an RMSNorm; `args`
    gives the block shapes (hidden size = the target's) and `head_vocab_size` the head's subset."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.fc = nn.Linear(2 * args.hidden_size, args.hidden_size, bias=True)
        if args.feature_layers:
            self.fuse = nn.Linear((1 + len(args.feature_layers)) * args.hidden_size, args.hidden_size, bias=False)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.token_ids = mx.arange(args.head_vocab_size or args.vocab_size, dtype=mx.int32)

    def __call__(self, features: mx.array, embeddings: mx.array, cache: list[Cache] | None = None) -> mx.array:
        """Predicted next features [B, S, d] from features and next-token embeddings [B, S, d]."""
        h = self.fc(mx.concatenate([embeddings, features], axis=-1))
        mask = "causal" if cache is None and h.shape[1] > 1 else (cache[0].make_mask(h.shape[1]) if cache else None)
        for layer, layer_cache in zip(self.layers, cache or [None] * len(self.layers)):
            h = layer(h, mask, layer_cache)
        return self.norm(h)

    def fused(self, features: mx.array) -> mx.array:
        """The target's hidden states as this draft reads them ([..., d * (1 + len(feature_layers))]
        -> [..., d]): the final feature itself, or fused with the lower blocks' outputs."""
        if not self.args.feature_layers:
            return features
        return self.fuse(normalised_taps(features, self.args.hidden_size, self.args.rms_norm_eps))

    def make_cache(self, max_rollback: int = 0) -> list[Cache]:
        """One growing cache per block (the draft attends over the whole verified context)."""
        return [KVCache() for _ in self.layers]


def target_subset_head(target: Model, token_ids: mx.array) -> SubsetHead:
    """The target's output head restricted to `token_ids`: its rows gathered, quantized
    rows kept quantized (a row's groups lie along the input dimension, so gathering rows
    is exact), so the draft scores exactly the logits the target would give those tokens."""
    source = target.model.embed_tokens if target.args.tie_word_embeddings else target.lm_head
    if isinstance(source, SubsetHead):
        raise ValueError("a target with a subset head cannot lend it to a feature draft")
    head = SubsetHead(target.args.hidden_size, token_ids.size, target.args.vocab_size)
    head.token_ids = token_ids
    if hasattr(source, "scales"):  # QuantizedLinear / QuantizedEmbedding
        linear = nn.QuantizedLinear(target.args.hidden_size, token_ids.size, bias=False,
                                    group_size=source.group_size, bits=source.bits)
        linear.weight, linear.scales = source.weight[token_ids], source.scales[token_ids]
        if getattr(source, "biases", None) is not None:
            linear.biases = source.biases[token_ids]
        head.out_proj = linear
    else:
        head.out_proj.weight = source.weight[token_ids]
    return head


def normalised_taps(features: mx.array, d: int, eps: float) -> mx.array:
    """Hidden states [..., d * (1 + taps)] with every tapped block's output RMS-normalised
    (the final feature, first, as it is)."""
    if features.shape[-1] == d:
        return features
    lower = features[..., d:].reshape(*features.shape[:-1], -1, d)
    lower = mx.fast.rms_norm(lower, None, eps).reshape(*features.shape[:-1], -1)
    return mx.concatenate([features[..., :d], lower], axis=-1)


def feature_taps(draft: FeatureDraft, target: Model) -> tuple[int, ...]:
    """The target blocks whose outputs `draft` reads (see `Drafter.feature_layers`), checked
    against the target's depth."""
    taps = tuple(draft.args.feature_layers or ())
    if taps and taps[-1] >= target.depth:
        raise InputError(f"feature draft reads block {taps[-1]} of its target (feature_layers), "
                         f"this target has {target.depth} blocks")
    return taps


def draft_config(draft: FeatureDraft) -> dict:
    """The `config.json` that `mlxspec.load.load_draft` reads back as this feature draft."""
    config = draft.args.to_hf_config()
    config.pop("architectures", None)
    config["draft_type"] = DRAFT_TYPE
    config["head_vocab_size"] = int(draft.token_ids.size)
    return config


class FeatureDrafter:
    """A `FeatureDraft` on top of the target. It consumes pairs (f_t, x_{t+1}): `features`
    holds one more entry than `tokens`, the last feature waiting for `last` as its pair."""

    mode = "feature draft"
    varies = False

    def outlook(self, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def __init__(self, draft: FeatureDraft, target: Model, chunk: int) -> None:
        self.draft, self.target, self.chunk = draft, target, chunk
        self.feature_layers = feature_taps(draft, target)
        self.embed = target.model.embed_tokens
        self.head = target_subset_head(target, draft.token_ids)
        self.cache = draft.make_cache()
        self.features: list[mx.array] = []
        self.tokens: list[int] = []
        self.started = False

    def extend(self, tokens: list[int], features: mx.array | None) -> None:
        if features is None:
            raise ValueError("a feature draft needs the target's hidden states")
        if not self.started:  # the prompt: x_0 is nobody's pair
            self.started, tokens = True, tokens[1:]
        self.tokens.extend(tokens)
        self.features.append(features)

    def _run(self, features: mx.array, token_ids: mx.array) -> mx.array:
        return self.draft(features, self.embed(token_ids), self.cache)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        features = self.draft.fused(mx.concatenate(self.features, axis=1))
        tokens = self.tokens + [last]
        for s in range(0, len(tokens) - self.chunk, self.chunk):  # catch up in chunks
            self._run(features[:, s : s + self.chunk], mx.array([tokens[s : s + self.chunk]]))
        s = (len(tokens) - 1) // self.chunk * self.chunk
        pred = self._run(features[:, s:], mx.array([tokens[s:]]))[:, -1:]
        self.features, self.tokens = [], []

        def step(token: mx.array) -> mx.array:
            nonlocal pred
            pred = self._run(pred, token)
            return self.head.subset_logits(pred)[:, -1]

        return draw_proposal(step, self.head.subset_logits(pred)[:, -1], k, pick, self.head.token_ids)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None) -> None:
        # positions drafted from predicted features give way to the verified pairs
        for c in self.cache:
            c.rollback(len(drafted) - 1)
        self.extend(drafted[:accepted], features[:, : accepted + 1])
