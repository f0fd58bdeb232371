"""Key/value caches for a batch of independent sequences: ragged rows, each with its own
length, position and rollback.

Every row owns a run of slots in one `[B, heads, T, head_dim]` buffer per layer. A pass
feeds the same number n of tokens to every row; row b writes them at its own next slots
(`lengths[b]` ..) and rotates them from its own next position (`offsets[b]` ..). Each
slot remembers the position it holds, and the mask is computed from those positions
(causal, and banded with a sliding window), so rows never see each other's slots, a row's
unused slots, or keys outside its window. Rolling a row back moves its length and
position back: the slots are overwritten by its next pass.

The bookkeeping is the same for every layer, so it lives once, in a `BatchLayout` that
all the layers' `BatchKVCache`s share; a pass begins when the model asks the first layer's
cache for its mask (`make_mask`), so callers never prepare one.
A sequence enters the batch from a single-sequence cache (`KVCache` or `RollingKVCache`,
e.g. after its prefill) and leaves it by index. Rows store keys/values as their single
caches did (full precision or quantized, `kv_quantization`): the first row to enter sets
the form for the batch's life.
"""

from __future__ import annotations

import mlx.core as mx

from .cache import KVCache, LayerCaches, Mask, RollingKVCache
from .kv_quantization import KVQuantization, Stored, each, encode, nbytes, slots

STEP = 256  # slots are added in multiples of this


def held_slots(cache: KVCache | RollingKVCache) -> int:
    """How many leading slots of a single-sequence cache hold positions."""
    if isinstance(cache, RollingKVCache):
        return 0 if cache.keys is None else min(slots(cache.keys), cache.offset)
    return cache.offset


def held_positions(cache: KVCache | RollingKVCache) -> mx.array:
    """The position held by each of those slots."""
    size = held_slots(cache)
    if isinstance(cache, RollingKVCache):
        last = cache.offset - 1
        return last - (last - mx.arange(size)) % cache.capacity
    return mx.arange(size)


class BatchLayout:
    """Where each row's tokens are: slots used, next position, and each slot's position."""

    def __init__(self, window: int | None) -> None:
        self.window = window
        self.lengths: list[int] = []
        self.offsets: list[int] = []
        self.positions = mx.zeros((0, 0), dtype=mx.int32)  # [B, T]
        self.start = mx.zeros((0,), dtype=mx.int32)  # this pass's first position per row
        self.slots = mx.zeros((0, 0), dtype=mx.int32)  # this pass's slots per row
        self.mask: Mask = None
        self.used = 0  # slots in use after this pass (the longest row)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def begin(self, n: int) -> None:
        """Prepare a pass feeding n tokens to every row: slots, positions and the mask."""
        lengths = mx.array(self.lengths, dtype=mx.int32)
        self.start = mx.array(self.offsets, dtype=mx.int32)
        self.slots = lengths[:, None] + mx.arange(n, dtype=mx.int32)[None]
        self.used = max(self.lengths) + n
        if self.used > self.positions.shape[1]:
            grow = -(-self.used // STEP) * STEP - self.positions.shape[1]
            self.positions = mx.concatenate([self.positions, mx.full((self.rows, grow), -1, mx.int32)], axis=1)
        query = self.start[:, None] + mx.arange(n, dtype=mx.int32)[None]  # [B, n]
        self.positions = mx.put_along_axis(self.positions, self.slots, query, axis=1)
        key = self.positions[:, None, : self.used]  # [B, 1, T]
        written = (mx.arange(self.used)[None] < (lengths + n)[:, None])[:, None]
        mask = written & (key >= 0) & (key <= query[..., None])
        if self.window is not None:
            mask = mask & (key > query[..., None] - self.window)
        self.mask = mask[:, None]  # [B, 1, n, T]
        self.lengths = [x + n for x in self.lengths]
        self.offsets = [x + n for x in self.offsets]

    def rollback(self, counts: list[int]) -> None:
        """Forget the newest counts[b] positions of each row b."""
        self.lengths = [x - c for x, c in zip(self.lengths, counts)]
        self.offsets = [x - c for x, c in zip(self.offsets, counts)]

    def add(self, positions: mx.array, offset: int) -> None:
        """A new last row whose slots hold `positions` [S]; its next position is `offset`."""
        width = max(self.positions.shape[1], positions.shape[0])
        rows = [_pad(self.positions, width, -1, axis=1), _pad(positions[None], width, -1, axis=1)]
        self.positions = mx.concatenate(rows, axis=0)
        self.lengths.append(positions.shape[0])
        self.offsets.append(offset)

    def keep(self, rows: list[int]) -> int:
        """Keep only these rows, in this order; returns the slots they still need (the buffers
        shrink once the longest row has left)."""
        self.lengths = [self.lengths[r] for r in rows]
        self.offsets = [self.offsets[r] for r in rows]
        width = min(self.positions.shape[1], -(-max(self.lengths, default=0) // STEP) * STEP)
        self.positions = self.positions[mx.array(rows, dtype=mx.int32), :width] if rows else self.positions[:0, :0]
        return width


def _after_empty_rows(stored: Stored, rows: int) -> Stored:
    """`stored` [1, H, T, D] after `rows` rows of zeros (rows that hold no slot)."""
    return each(lambda a: mx.concatenate([mx.zeros((rows, *a.shape[1:]), a.dtype), a]), stored) if rows else stored


def _add_empty_row(stored: Stored) -> Stored:
    """`stored` [B, H, T, D] with a last row of zeros (slots the new row does not hold)."""
    return each(lambda a: mx.concatenate([a, mx.zeros((1, *a.shape[1:]), a.dtype)]), stored)


def _pad_slots(stored: Stored, width: int) -> Stored:
    """`stored` padded with zeros to `width` slots."""
    return each(lambda a: _pad(a, width, 0, axis=2), stored)


def _pad(a: mx.array, width: int, value: int | float, axis: int) -> mx.array:
    """`a` padded with `value` to `width` along `axis`."""
    missing = width - a.shape[axis]
    if missing <= 0:
        return a
    shape = list(a.shape)
    shape[axis] = missing
    return mx.concatenate([a, mx.full(shape, value, a.dtype)], axis=axis)


class BatchKVCache:
    """One layer's keys and values for all rows of a batch (see the module docstring)."""

    def __init__(self, layout: BatchLayout) -> None:
        self.layout = layout
        self.kv: KVQuantization | None = None  # the first row's (`add`)
        self.keys: Stored | None = None
        self.values: Stored | None = None

    @property
    def offset(self) -> mx.array:
        """The first position of the current pass, per row ([B]; rotary embeddings use it)."""
        return self.layout.start

    def make_mask(self, n: int) -> Mask:
        """Begin a pass feeding n tokens to every row (a model asks its first layer's cache
        for the mask once per pass, before any layer writes): the pass's mask [B, 1, n, T]."""
        self.layout.begin(n)
        return self.layout.mask

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Stored, Stored]:
        """Write the pass's keys/values [B, H, n, D] at each row's slots; return every slot in
        use (as stored)."""
        keys, values = encode(self.kv, keys), encode(self.kv, values)
        used = self.layout.used
        if self.keys is None or used > slots(self.keys):
            width = -(-used // STEP) * STEP
            none = lambda a: a[:, :, :0]  # noqa: E731
            self.keys = _pad_slots(self.keys if self.keys is not None else each(none, keys), width)
            self.values = _pad_slots(self.values if self.values is not None else each(none, values), width)
        at = self.layout.slots[:, None, :, None]
        put = lambda buf, new: mx.put_along_axis(buf, at, new, axis=2)  # noqa: E731
        self.keys, self.values = each(put, self.keys, keys), each(put, self.values, values)
        fetch = lambda a: a[:, :, :used]  # noqa: E731
        return each(fetch, self.keys), each(fetch, self.values)

    def add(self, cache: KVCache | RollingKVCache) -> None:
        """Append a single-sequence cache's slots as a new last row (before `layout.add`)."""
        if self.layout.rows == 0:
            self.kv = cache.kv
        assert cache.kv == self.kv, "a batch's rows store keys/values in one form"
        size = held_slots(cache)
        if size == 0:  # an empty cache (e.g. a draft that has read no pair yet): a row of no slots
            if self.keys is not None:
                self.keys, self.values = _add_empty_row(self.keys), _add_empty_row(self.values)
            return
        held = lambda a: a[:, :, :size]  # noqa: E731
        keys, values = each(held, cache.keys), each(held, cache.values)
        if self.keys is None:  # every row so far is empty (no buffer yet): they get zero slots
            empty = self.layout.rows
            self.keys, self.values = _after_empty_rows(keys, empty), _after_empty_rows(values, empty)
            return
        width = max(slots(self.keys), size)
        stack = lambda rows, row: mx.concatenate([_pad(rows, width, 0, 2), _pad(row, width, 0, 2)])  # noqa: E731
        self.keys, self.values = each(stack, self.keys, keys), each(stack, self.values, values)

    def keep(self, rows: list[int], width: int) -> None:
        """Keep only these rows, in this order, and `width` slots (none: the buffers are freed)."""
        if not rows or self.keys is None:
            self.keys = self.values = None
            return
        index = mx.array(rows, dtype=mx.int32)
        kept = lambda a: a[index, :, :width]  # noqa: E731
        self.keys, self.values = each(kept, self.keys), each(kept, self.values)

    def row(self, b: int, length: int) -> KVCache:
        """Row b's first `length` slots as a single-sequence cache (full attention only)."""
        cache = KVCache(self.kv)
        first = lambda a: a[b : b + 1, :, :length]  # noqa: E731
        cache.keys, cache.values = each(first, self.keys), each(first, self.values)
        cache.offset = length
        return cache

    def gather(self, b: int, at: mx.array) -> tuple[Stored, Stored]:
        """Row b's keys/values in slots `at` ([1, H, len(at), ...], as stored)."""
        picked = lambda a: a[b : b + 1, :, at]  # noqa: E731
        return each(picked, self.keys), each(picked, self.values)

    @property
    def max_rollback(self) -> int:
        return 1 << 30

    @property
    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (packed data, scales and biases when quantized)."""
        return nbytes(self.keys) + nbytes(self.values)


class BatchCache:
    """The layers' caches of one model for one batch, and their shared layout."""

    def __init__(self, layers: int, window: int | None) -> None:
        self.layout = BatchLayout(window)
        self.layers = [BatchKVCache(self.layout) for _ in range(layers)]

    def add(self, caches: list[KVCache | RollingKVCache]) -> None:
        """A sequence's single caches (one per layer) become the batch's last row."""
        for layer, cache in zip(self.layers, caches):
            layer.add(cache)
        self.layout.add(held_positions(caches[0]), caches[0].offset)

    def rollback(self, counts: list[int]) -> None:
        """Forget the newest counts[b] positions of each row b."""
        self.layout.rollback(counts)

    @property
    def nbytes(self) -> int:
        """Bytes held by every layer's keys and values for all rows (as stored)."""
        return sum(layer.nbytes for layer in self.layers)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order."""
        width = self.layout.keep(rows)
        for layer in self.layers:
            layer.keep(rows, width)

    def row(self, b: int, max_rollback: int = 0) -> LayerCaches | None:
        """Row b as single caches (for the prompt cache), or None where they cannot be what a
        prefill leaves. Without a window: when its slots hold positions 0.. in order. With a
        sliding window: rolling caches of `window + max_rollback` slots holding the row's
        newest positions (in whatever slots a window rolled them into), as a prefill of the
        row's text leaves them, so a request extending the row attends within its window."""
        length = self.layout.lengths[b]
        if length == 0:
            return None
        positions = self.layout.positions[b, :length]
        window = self.layout.window
        if window is None:
            in_order = mx.array_equal(positions, mx.arange(length)).item()
            return LayerCaches(layer.row(b, length) for layer in self.layers) if in_order else None
        offset, capacity = self.layout.offsets[b], window + max_rollback
        keep = min(length, capacity)
        at = mx.argsort(positions)[length - keep :]  # the newest `keep` positions, oldest first
        newest = mx.arange(offset - keep, offset)
        if (keep < capacity and keep != offset) or not mx.array_equal(positions[at], newest).item():
            return None
        caches = LayerCaches(RollingKVCache(window, max_rollback, layer.kv) for layer in self.layers)
        for cache, layer in zip(caches, self.layers):
            cache.offset = offset - keep  # the positions before these are out of every window
            cache.update_and_fetch_stored(*layer.gather(b, at))
        return caches
