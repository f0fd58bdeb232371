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
from ..models import Cache, KVCache, KVQuantization, LayerCaches, Model, ModelArgs, SubsetHead, TransformerBlock, fingerprint
from ..models.batch_cache import BatchCache
from .kind import register
from .protocol import MODEL_OUTLOOK, Outlook, Pick, Proposal, draw_proposal, pick_rows, row_proposals

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

    def make_cache(self, max_rollback: int = 0, kv: KVQuantization | None = None) -> LayerCaches:
        """One growing cache per block (the draft attends over the whole verified context);
        with `kv`, quantized."""
        if kv is not None:
            kv.check(self.args.head_dim, "the feature draft")
        return LayerCaches(KVCache(kv) for _ in self.layers)

    # the draft kind (`mlxspec.drafts.kind.DraftKind`)
    batches = True
    reads_features = True
    timed = property(lambda self: self)
    token_model = None

    def drafter(self, target: Model, k_max: int, chunk: int, greedy: bool,
                kv: KVQuantization | None = None) -> FeatureDrafter:
        return FeatureDrafter(self, target, chunk, kv)

    def batch_drafter(self, target: Model, chunk: int, kv: KVQuantization | None = None) -> BatchFeatureDrafter:
        return BatchFeatureDrafter(self, target, chunk, kv)

    def check(self, target: Model, num_draft_tokens: int) -> None:
        if not isinstance(target, Model):
            raise InputError(f"a feature draft reads the hidden states of mlxspec's own blocks; this "
                             f"{target.args.model_type} target runs through mlx-lm: use a draft model or --draft ngram")
        for name in ("hidden_size", "vocab_size"):
            if getattr(self.args, name) != getattr(target.args, name):
                raise InputError(f"feature draft made for a target with {name} {getattr(self.args, name)}, "
                                 f"this target has {getattr(target.args, name)}")
        feature_taps(self, target)

    def describe(self) -> str:
        a = self.args
        head = f", head over {a.head_vocab_size} tokens" if a.head_vocab_size else ""
        return f"feature draft (reads the target's hidden states), {a.num_hidden_layers} blocks{head}"

    def vocabulary(self, target: Model) -> int:
        return self.args.vocab_size

    def fingerprint(self) -> dict:
        return fingerprint(self)


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

    def __init__(self, draft: FeatureDraft, target: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        self.draft, self.target, self.chunk = draft, target, chunk
        self.feature_layers = feature_taps(draft, target)
        self.embed = target.model.embed_tokens
        self.head = target_subset_head(target, draft.token_ids)
        self.cache = draft.make_cache(kv=kv)
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
        self.cache.rollback(len(drafted) - 1)
        self.extend(drafted[:accepted], features[:, : accepted + 1])


class BatchFeatureDrafter:
    """A feature draft for every row of a batch: row b consumes pairs (f_t, x_{t+1});
    `features[b]` holds one more entry than `tokens[b]` (the last waits for the row's newest
    token). Rows catch up together, right-padded."""

    mode = FeatureDrafter.mode

    def __init__(self, draft: FeatureDraft, target: Model, chunk: int, kv: KVQuantization | None = None) -> None:
        self.draft, self.chunk, self.kv = draft, chunk, kv
        self.feature_layers = feature_taps(draft, target)
        self.embed = target.model.embed_tokens
        self.head = target_subset_head(target, draft.token_ids)
        self.cache = BatchCache(len(draft.layers), None)
        self.features: list[list[mx.array]] = []  # per row, pieces [1, n_i, d * (1 + taps)] of its n + 1 features
        self.tokens: list[list[int]] = []
        self.k = 0

    def add(self, prompt: list[int], hidden: mx.array, greedy: bool = True) -> None:
        """A new last row: the draft reads the prompt's pairs alone, then joins the batch."""
        cache = self.draft.make_cache(kv=self.kv)
        for s in range(0, len(prompt) - 1, self.chunk):
            ids = mx.array([prompt[s + 1 : s + 1 + self.chunk]])
            self.draft(self.draft.fused(hidden[:, s : s + ids.shape[1]]), self.embed(ids), cache)
            mx.eval([c.keys for c in cache])
        self.cache.add(cache)
        self.features.append([hidden[:, -1:]])
        self.tokens.append([])

    def keep(self, rows: list[int]) -> None:
        self.cache.keep(rows)
        self.features = [self.features[r] for r in rows]
        self.tokens = [self.tokens[r] for r in rows]

    def outlook(self, b: int, last: int) -> Outlook:
        return MODEL_OUTLOOK

    def extend(self, b: int, tokens: list[int], hidden: mx.array) -> None:
        self.tokens[b].extend(tokens)
        self.features[b].append(hidden)  # joined once, when the row next drafts

    def _run(self, features: mx.array, tokens: mx.array) -> mx.array:
        return self.draft(features, self.embed(tokens), self.cache.layers)

    def propose(self, lasts: list[int], ks: list[int], picks: list[Pick]) -> list[Proposal]:
        self.k = k = max(ks)
        feeds = [t + [last] for t, last in zip(self.tokens, lasts)]
        width = max(len(f) for f in feeds)
        rows = [mx.concatenate(f, axis=1) if len(f) > 1 else f[0] for f in self.features]
        features = mx.concatenate([mx.pad(f, [(0, 0), (0, width - f.shape[1]), (0, 0)]) for f in rows])
        pred = self._run(self.draft.fused(features), mx.array([f + [0] * (width - len(f)) for f in feeds]))
        pred = pred[mx.arange(len(feeds)), mx.array([len(f) - 1 for f in feeds])][:, None]
        self.cache.layout.rollback([width - len(f) for f in feeds])
        self.tokens, self.features = [[] for _ in feeds], [[] for _ in feeds]
        tokens, logprobs = [], []
        for i in range(k):
            if i:
                pred = self._run(pred, tokens[-1])
            logits = self.head.subset_logits(pred)[:, -1]
            picked = pick_rows(logits, picks, ks, i, self.head.token_ids)
            tokens.append(self.head.token_ids[mx.concatenate([t for t, _ in picked], axis=0)])
            logprobs.append([lp for _, lp in picked])
            mx.async_eval(tokens[-1])
        return row_proposals(mx.concatenate(tokens, axis=1), logprobs, ks, self.head.token_ids)

    def settle(self, accepted: list[int], drafted: list[list[int]], hidden: mx.array) -> None:
        """Positions drafted from predicted features give way to the verified pairs."""
        self.cache.layout.rollback([self.k - 1] * len(accepted))
        for b, n in enumerate(accepted):
            self.extend(b, drafted[b][:n], hidden[b : b + 1, : n + 1])


register(DRAFT_TYPE, module=FeatureDraft, help="a feature draft, which reads the target's hidden states")
