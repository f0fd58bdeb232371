"""A model of an architecture outside mlxspec's port, run by mlx-lm's own implementation, as
the engine sees a model: a pass over a cache that can roll back.

mlx-lm's caches come in kinds: growing key/value caches that trim exactly, rotating ones
for sliding windows that cannot trim once they have wrapped, recurrent state that cannot
trim at all. `ForeignCaches` holds them behind `LayerCaches`' four members. A rollback of
caches that all trim exactly is a trim; otherwise every cache goes back to the copy taken
before the newest pass, and the tokens of that pass that stay are fed again, so no token
ever comes from a cache holding positions it should not (a round rolls back at most its own
pass). Copies are lazy: an array is copied only when the pass after it overwrites it.

What needs mlxspec's own blocks (a feature draft reading hidden states, a batch of rows
in one cache, a pipeline) is refused for these models by the code that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from ..errors import InputError
from .cache import LayerCaches
from .kv_quantization import KVQuantization


@dataclass
class ForeignArgs:
    """What the engine reads of a model's configuration (names as in `ModelArgs`)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    model_type: str
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = None  # the port's rolling cache only: mlx-lm's caches window themselves
    head_vocab_size: int | None = None
    feature_layers: list[int] | None = None
    quantization: dict[str, Any] | None = field(default=None, repr=False)


def _exact_trim(cache: Any) -> bool:
    """Whether `trim` forgets a cache's newest positions exactly, whatever it holds."""
    from mlx_lm.models.cache import KVCache, QuantizedKVCache

    return type(cache) in (KVCache, QuantizedKVCache)


def _copy(state: Any) -> Any:
    """A cache state whose arrays the next pass cannot overwrite (new array objects, lazy)."""
    return tree_map(lambda a: a[...] if isinstance(a, mx.array) else a, state)


class ForeignCaches(LayerCaches):
    """mlx-lm's caches of one sequence for a `ForeignModel` (see the module docstring).
    Caches that cannot trim keep, for the newest passes, the states before each and the
    tokens each fed: enough of them to go back `limit` positions."""

    def __init__(self, model: ForeignModel, caches: Sequence[Any], limit: int) -> None:
        super().__init__(caches)
        self.model, self.limit = model, limit
        self.position = 0
        self.trims = all(_exact_trim(c) for c in caches)
        self.passes: list[tuple[list[Any], int, mx.array]] = []  # (states before, position before, tokens), oldest first

    @property
    def offset(self) -> int:
        return self.position

    @property
    def max_rollback(self) -> int:
        if self.trims:
            return self.position
        return self.position - self.passes[0][1] if self.passes else 0

    def before_pass(self, tokens: mx.array) -> None:
        """A pass is about to feed `tokens` [1, n]: keep what a rollback needs."""
        if not self.trims:
            self.passes.append(([_copy(c.state) for c in self], self.position, tokens))
        self.position += tokens.shape[1]
        while len(self.passes) > 1 and self.passes[1][1] <= self.position - self.limit:
            self.passes.pop(0)  # no rollback reaches back before the next one

    def rollback(self, n: int) -> None:
        if not n:
            return
        if not 0 < n <= self.max_rollback:
            raise ValueError(f"cannot roll back {n} positions (at most {self.max_rollback})")
        if self.trims:
            for c in self:
                c.trim(n)
            self.position -= n
            return
        goal = self.position - n
        i = max(j for j, (_, before, _) in enumerate(self.passes) if before <= goal)
        states, before, _ = self.passes[i]
        fed = mx.concatenate([tokens for _, _, tokens in self.passes[i:]], axis=1)[:, : goal - before]
        for c, state in zip(self, states):
            c.state = state
        self.passes, self.position = self.passes[:i], before
        if fed.shape[1]:
            self.model(fed, self)  # fed again (lazily): the cache as if only these had been fed

    def arrays(self) -> list[mx.array]:
        return [a for c in self for _, a in tree_flatten(c.state) if isinstance(a, mx.array)]


def quantized_caches(model: ForeignModel, caches: list, kv: KVQuantization) -> list:
    """mlx-lm's growing caches as its quantized ones; one line for caches of another kind."""
    from mlx_lm.models.cache import KVCache, QuantizedKVCache

    others = sorted({type(c).__name__ for c in caches if type(c) is not KVCache})
    if others:
        raise InputError(f"kv_bits: this {model.args.model_type} model runs through mlx-lm with {', '.join(others)} "
                         "caches, which cannot be quantized and still roll back; run it without kv_bits")
    args = getattr(model.lm, "args", None)
    heads = getattr(args, "num_attention_heads", None)
    head_dim = getattr(args, "head_dim", None) or (heads and model.args.hidden_size // heads)
    if head_dim:
        kv.check(head_dim)
    return [QuantizedKVCache(group_size=kv.group_size, bits=kv.bits) for _ in caches]


class ForeignModel:
    """An mlx-lm model (`lm`) as the engine's model: `model(tokens, cache) -> logits`, passes,
    a prefill that computes the output head at the last prompt position only, and caches
    that roll back (`ForeignCaches`)."""

    batches = False  # a batch of rows in one cache needs the port's own blocks

    def __init__(self, lm: nn.Module, args: ForeignArgs) -> None:
        self.lm, self.args = lm, args

    def __call__(self, tokens: mx.array, cache: ForeignCaches | None = None) -> mx.array:
        """Logits [B, n, vocab] for `tokens` after `cache` (lazy: unevaluated, only the cache
        writes happen when it is evaluated)."""
        if cache is None:
            return self.lm(tokens)
        if not isinstance(cache, ForeignCaches):
            raise InputError("a model run by mlx-lm needs its own caches (model.make_cache())")
        cache.before_pass(tokens)
        return self.lm(tokens, cache=list(cache))

    @property
    def model(self) -> ForeignModel:
        """The pass itself (what `Model.model` is for the port's models; here it ends in logits)."""
        return self

    def forward(self, tokens: mx.array, cache: ForeignCaches, taps: tuple[int, ...] | None):
        """Logits for `tokens` after `cache`; no hidden states (a feature draft cannot read them)."""
        if taps is not None:
            raise InputError(f"a feature draft reads hidden states of mlxspec's own blocks; this "
                             f"{self.args.model_type} target runs through mlx-lm")
        return self(tokens, cache), None

    def prefill(self, prompt: Sequence[int], cache: ForeignCaches, chunk: int, taps: tuple[int, ...] | None):
        """The prompt but its last token through `cache` in chunks (only the cache written),
        then the last token alone: its logits [1, vocab]."""
        if taps is not None:
            return self.forward(mx.array([list(prompt)]), cache, taps)
        ids = list(prompt)
        for start in range(0, len(ids) - 1, chunk):
            self(mx.array([ids[start : min(start + chunk, len(ids) - 1)]]), cache)
            mx.eval(cache.arrays())
        return self(mx.array([ids[-1:]]), cache)[:, -1], None

    def make_cache(self, max_rollback: int = 0, kv: KVQuantization | None = None) -> ForeignCaches:
        """mlx-lm's caches for this model (its `make_cache`, else one growing cache per
        layer), able to roll back `max_rollback` positions at once (any number when they trim).
        With `kv`, mlx-lm's quantized caches, which trim exactly; a model whose caches are of
        other kinds (rotating, recurrent) cannot have them (`InputError`)."""
        from mlx_lm.models.cache import make_prompt_cache

        caches = make_prompt_cache(self.lm)
        return ForeignCaches(self, caches if kv is None else quantized_caches(self, caches, kv), max_rollback)

    @property
    def layers(self) -> list[nn.Module]:
        return self.lm.layers

    @property
    def depth(self) -> int:
        return self.args.num_hidden_layers

    def modules(self) -> list[nn.Module]:
        return self.lm.modules()

    def parameters(self) -> dict:
        return self.lm.parameters()
