"""The Mistral decoder in MLX (Jiang et al. 2023, "Mistral 7B"), and with it every family of
the port (`families`: Llama, Mixtral, Qwen2, Qwen3 set options on the same blocks).

Pre-norm transformer blocks: RMSNorm -> grouped-query attention with rotary position
embeddings (real arithmetic, `rope`) and an optional sliding window -> residual,
RMSNorm -> SwiGLU feed-forward -> residual; a final RMSNorm and the output head.
Module names are the HF / mlx-lm checkpoint keys, so weights load without a mapping.
No I/O and no device choice here.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import mlx.core as mx
import mlx.nn as nn

from .cache import KVCache, LayerCaches, Mask, RollingKVCache, layer_cache
from .config import ModelArgs
from .kv_quantization import KVQuantization, quantized_attention
from . import passes
from .linear import Linear
from .moe import SparseMoE
from .rope import RoPE

Cache = KVCache | RollingKVCache


def full_pass_mask(n: int, window: int | None) -> Mask:
    """Causal (and, with a window, banded) mask for `n` tokens attended in one pass."""
    if n == 1:
        return None
    if window is None or n <= window:
        return "causal"
    pos = mx.arange(n)
    q, k = pos[:, None], pos[None, :]
    return (k <= q) & (k > q - window)


class Attention(nn.Module):
    """Grouped-query self-attention: n_kv_heads key/value heads shared by n_heads queries;
    optional biases on the projections and, in Qwen3, an RMSNorm over each query and key
    head before the rotation."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        dim, bias = args.hidden_size, args.attention_bias or args.qkv_bias
        self.q_proj = Linear(dim, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, dim, bias=args.attention_bias)
        if args.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=args.rms_norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=args.rms_norm_eps)
        self.rope = RoPE(args)

    def qkv(self, x: mx.array, offset: int | mx.array) -> tuple[mx.array, mx.array, mx.array]:
        """Queries, keys and values [B, heads, L, head_dim] of `x` [B, L, dim], the first at
        position `offset`, rotated."""
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        if "q_norm" in self:
            q, k = self.q_norm(q), self.k_norm(k)
        return self.rope(q.transpose(0, 2, 1, 3), offset), self.rope(k.transpose(0, 2, 1, 3), offset), v

    def attend(self, q: mx.array, k: mx.array | tuple, v: mx.array | tuple, mask: Mask) -> mx.array:
        """Scaled dot-product attention, heads merged: [B, L, n_heads * head_dim]; over the
        packed data itself when a quantized cache gave the keys/values (a tuple)."""
        if isinstance(k, tuple):
            out = quantized_attention(q, k, v, self.scale, mask)
        else:
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        B, _, L, _ = out.shape
        return out.transpose(0, 2, 1, 3).reshape(B, L, -1)

    def __call__(self, x: mx.array, mask: Mask, cache: Cache | None) -> mx.array:
        q, k, v = self.qkv(x, 0 if cache is None else cache.offset)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        return self.o_proj(self.attend(q, k, v, mask))


@partial(mx.compile, shapeless=True)
def swiglu(gate: mx.array, up: mx.array) -> mx.array:
    """silu(gate) * up, compiled into one fused kernel."""
    return nn.silu(gate) * up


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.up_proj = Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.down_proj = Linear(args.intermediate_size, args.hidden_size, bias=args.mlp_bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class TransformerBlock(nn.Module):
    """x + attn(norm(x)), then h + ffn(norm(h)); the feed-forward is a SwiGLU (`mlp`) or,
    in a Mixtral, a sparse mixture of SwiGLU experts (`block_sparse_moe`)."""

    # Passes over at most this many tokens after a cache (decoding, a speculative round's
    # verification, a draft's steps) run the block compiled; see `step`.
    step_tokens = 16

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.self_attn = Attention(args)
        if args.num_local_experts is None:
            self.mlp = MLP(args)
        else:
            self.block_sparse_moe = SparseMoE(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask: Mask, cache: Cache | None) -> mx.array:
        if cache is not None and x.shape[1] <= self.step_tokens:
            return self.step(x, mask, cache)
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.feed_forward(self.post_attention_layernorm(h))

    def feed_forward(self, h: mx.array) -> mx.array:
        """The block's feed-forward: dense SwiGLU or the mixture of experts."""
        return self.mlp(h) if "mlp" in self else self.block_sparse_moe(h)

    def step(self, x: mx.array, mask: Mask, cache: Cache) -> mx.array:
        """The same block for a few tokens after `cache`, with all but the cache write and the
        attention compiled (`mx.compile`, the weights passed in at every call, never baked in):
        a pass over one or a few tokens is mostly building and dispatching small graphs, which
        compilation fuses. A new token count compiles once."""
        if "_before" not in self.__dict__:
            self._before = mx.compile(partial(_before_attention, self), inputs=self.state)
            self._after = mx.compile(partial(_after_attention, self), inputs=self.state)
        order = getattr(self.self_attn.q_proj, "weight_first_rows", 0)  # a constant: one compilation each
        q, k, v = self._before(x, mx.array(cache.offset, dtype=mx.int32), order)
        k, v = cache.update_and_fetch(k, v)
        return self._after(x, self.self_attn.attend(q, k, v, mask), order)


# The compiled halves of `TransformerBlock.step`. `order` (the multiplication order of the
# block's `Linear`s) is not read here: as a constant argument it keys the compilation.
def _before_attention(block: TransformerBlock, x: mx.array, offset: mx.array, order: int):
    return block.self_attn.qkv(block.input_layernorm(x), offset)


def _after_attention(block: TransformerBlock, x: mx.array, attended: mx.array, order: int) -> mx.array:
    h = x + block.self_attn.o_proj(attended)
    return h + block.feed_forward(block.post_attention_layernorm(h))


class MistralModel(nn.Module):
    """Embedding, the stack of blocks and the final norm (the checkpoint's `model.*`)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.sliding_window = args.sliding_window

    def __call__(self, tokens: mx.array, cache: list[Cache] | None, taps: Sequence[int] = ()) -> mx.array:
        """Final hidden states [B, L, d]; with `taps` (ascending block indices) the outputs of
        those blocks follow along the last axis, [B, L, d * (1 + len(taps))]: what a
        multi-layer feature draft reads (EAGLE-3)."""
        return self.final_norm(self.blocks(self.embed_tokens(tokens), cache, taps))

    def final_norm(self, h: mx.array) -> mx.array:
        """The final norm over the last block's output; tapped outputs after it stay as they are."""
        d = self.norm.weight.shape[-1]  # (a quantized embedding's weight is packed)
        if h.shape[-1] == d:
            return self.norm(h)
        return mx.concatenate([self.norm(h[..., :d]), h[..., d:]], axis=-1)

    def blocks(self, h: mx.array, cache: list[Cache] | None, taps: Sequence[int] = ()) -> mx.array:
        """Hidden states [B, L, dim] through every block (one cache each, or none), the outputs
        of blocks `taps` appended along the last axis."""
        mask, caches = self.block_inputs(h.shape[1], cache)
        return run_blocks(self.layers, h, mask, caches, taps)

    def block_inputs(self, n: int, cache: list[Cache] | None) -> tuple[Mask, list[Cache | None]]:
        """The attention mask for `n` new positions and the cache of every block (None each
        for a pass without one)."""
        if cache is None:
            return full_pass_mask(n, self.sliding_window), [None] * len(self.layers)
        return cache[0].make_mask(n), list(cache)


def run_blocks(layers: Sequence[nn.Module], h: mx.array, mask: Mask, cache: Sequence[Cache | None],
               taps: Sequence[int] = ()) -> mx.array:
    """`h` through `layers` in turn; the outputs of layers `taps` (indices into `layers`)
    follow the last output along the last axis."""
    kept = []
    for i, (layer, c) in enumerate(zip(layers, cache)):
        h = layer(h, mask, c)
        if i in taps:
            kept.append(h)
    return mx.concatenate([h, *kept], axis=-1) if kept else h


class SubsetHead(nn.Module):
    """An output layer that scores only a fixed subset of the vocabulary (`token_ids`, the
    most frequent tokens); every other token gets logit -inf, i.e. probability 0.

    This is what makes a small draft cheap: for a 49k vocabulary the full head costs more
    than a few transformer blocks (frequency-ranked drafting, as in FR-Spec, Zhao et al.
    2025). Exactness is unaffected: a draft may put zero mass on tokens; rejection
    sampling then draws them from the residual max(0, p - q)."""

    def __init__(self, hidden_size: int, head_vocab_size: int, vocab_size: int) -> None:
        super().__init__()
        self.out_proj = nn.Linear(hidden_size, head_vocab_size, bias=False)
        self.token_ids = mx.arange(head_vocab_size, dtype=mx.int32)
        self.vocab_size = vocab_size

    def subset_logits(self, h: mx.array) -> mx.array:
        """Logits over the subset only: [..., head_vocab_size] (what distillation trains)."""
        return self.out_proj(h)

    def __call__(self, h: mx.array) -> mx.array:
        sub = self.subset_logits(h)
        full = mx.full((*sub.shape[:-1], self.vocab_size), -mx.inf, dtype=sub.dtype)
        full[..., self.token_ids] = sub
        return full


class Model(nn.Module):
    """A causal LM of any of the port's families: `model(tokens [B, S], cache) -> logits [B, S, vocab]`."""

    stack = MistralModel  # what holds the embedding, the blocks and the final norm
    batches = True  # rows of a batch share one pass (`models.batch_cache`)

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.model = self.stack(args)
        if args.head_vocab_size is not None:
            self.lm_head = SubsetHead(args.hidden_size, args.head_vocab_size, args.vocab_size)
        elif not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(self, tokens: mx.array, cache: list[Cache] | None = None) -> mx.array:
        """Logits for every position of `tokens`; with `cache`, continues after what it holds."""
        return self.head(self.model(tokens, cache))

    def forward(self, tokens: mx.array, cache: list[Cache], taps: tuple[int, ...] | None):
        """Logits for `tokens` after `cache` (and the hidden states `taps` names; `passes.forward`)."""
        return passes.forward(self, tokens, cache, taps)

    def prefill(self, prompt: Sequence[int], cache: LayerCaches, chunk: int, taps: tuple[int, ...] | None):
        """The prompt through `cache` in chunks; the logits after it (`passes.prefill`)."""
        return passes.prefill(self, prompt, cache, chunk, taps)

    def head(self, h: mx.array) -> mx.array:
        """Logits from final hidden states (the tied embedding or `lm_head`)."""
        if self.args.tie_word_embeddings and self.args.head_vocab_size is None:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    @property
    def depth(self) -> int:
        """Blocks of the whole model (rank 0 of a pipeline holds only some of them)."""
        return self.args.num_hidden_layers

    @property
    def layers(self) -> list[TransformerBlock]:
        """The transformer blocks (mlx-lm convention)."""
        return self.model.layers

    def make_cache(self, max_rollback: int = 0, kv: KVQuantization | None = None) -> LayerCaches:
        """One cache per layer: rolling (window + `max_rollback` slots) with a sliding window,
        growing without one. `max_rollback` is the most positions a caller will roll back at once;
        with `kv` the caches hold quantized keys/values (`InputError` when its groups do not
        divide head_dim)."""
        if kv is not None:
            kv.check(self.args.head_dim)
        return LayerCaches(layer_cache(self.args.sliding_window, max_rollback, kv) for _ in self.layers)
