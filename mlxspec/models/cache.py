"""Key/value caches that can be rolled back: a rolling buffer for sliding-window
attention and a growing buffer for full attention, with one interface.

Rolling buffer
--------------
With a window of W keys a query at position i attends to positions i-W+1 .. i. The
buffer holds ``capacity = W + max_rollback`` slots and position p always lives in slot
``p % capacity``. The spare ``max_rollback`` slots are what make rollback safe: the
positions a speculative round rolls back overwrote only slots whose history had
already left the window.

Worked example, W=3, max_rollback=2, so capacity 5 (slot contents = positions)::

    feed 0..6            slots [5 6 2 3 4]   offset 7   (p % 5; 0 and 1 overwritten)
    verify 7,8,9         slots [5 6 7 8 9]   offset 10  (writes 3 <= capacity-W+1 slots in place)
    reject 8,9           offset 8            slot 3 and 4 now count as positions 3 and 4:
                                             outside the window of query 8 (6,7,8), so masked
    feed 8'              slots [5 6 7 8' 9]  offset 9

Because rotary embeddings are applied before keys enter the cache, attention does not
care in which order the slots hold them: the mask is computed from the position each
slot holds, never from its index. A chunk longer than ``capacity - W + 1`` (prefill) is
attended against the old slots concatenated with the chunk, then the newest
``capacity`` positions are written back.

What a slot stores is full-precision keys/values or, with a `KVQuantization`, each
position's vector quantized on its own (`kv_quantization`): the slot logic is the same.
"""

from __future__ import annotations

import mlx.core as mx

from .kv_quantization import KVQuantization, Stored, each, encode, nbytes, parts, slots

Mask = mx.array | str | None


class KVCache:
    """Growing cache for full attention: position p lives at index p; grows in steps.
    With `kv` its slots hold quantized keys/values."""

    step = 256

    def __init__(self, kv: KVQuantization | None = None) -> None:
        self.kv = kv
        self.keys: Stored | None = None
        self.values: Stored | None = None
        self.offset = 0

    def make_mask(self, n: int) -> Mask:
        """Mask for the next `n` queries against everything cached plus themselves."""
        return None if n == 1 else "causal"

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Stored, Stored]:
        """Append `[B, H, n, D]` keys/values; return all cached keys/values in order (as stored)."""
        return self.update_and_fetch_stored(encode(self.kv, keys), encode(self.kv, values))

    def update_and_fetch_stored(self, keys: Stored, values: Stored) -> tuple[Stored, Stored]:
        """`update_and_fetch` for keys/values already in this cache's stored form."""
        prev, n = self.offset, slots(keys)
        if self.keys is None or prev + n > slots(self.keys):
            self._grow(keys, values, prev + n)
        for buf, new in zip(parts(self.keys) + parts(self.values), parts(keys) + parts(values)):
            buf[..., prev : prev + n, :] = new
        self.offset += n
        fetch = lambda a: a[..., : self.offset, :]  # noqa: E731
        return each(fetch, self.keys), each(fetch, self.values)

    def _grow(self, keys: Stored, values: Stored, needed: int) -> None:
        """Re-allocate to the next multiple of `step` >= `needed`, keeping what is cached."""
        size = -(-needed // self.step) * self.step

        def grown(buf: mx.array | None, like: mx.array) -> mx.array:
            B, H, _, D = like.shape
            if buf is None:
                return mx.zeros((B, H, size, D), like.dtype)
            fresh = mx.zeros((B, H, size - self.offset, D), like.dtype)
            return mx.concatenate([buf[..., : self.offset, :], fresh], axis=2)

        if self.keys is None:
            self.keys, self.values = each(lambda k: grown(None, k), keys), each(lambda v: grown(None, v), values)
        else:
            self.keys, self.values = each(grown, self.keys, keys), each(grown, self.values, values)

    @property
    def max_rollback(self) -> int:
        """How many of the newest positions `rollback` may remove."""
        return self.offset

    def rollback(self, n: int) -> None:
        """Forget the newest `n` positions, as if they had never been fed."""
        if not 0 <= n <= self.max_rollback:
            raise ValueError(f"cannot roll back {n} positions (at most {self.max_rollback})")
        self.offset -= n

    @property
    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (packed data, scales and biases when quantized)."""
        return nbytes(self.keys) + nbytes(self.values)


class RollingKVCache:
    """Fixed-capacity rolling buffer for sliding-window attention (see module docstring)."""

    step = 256

    def __init__(self, window: int, max_rollback: int = 0, kv: KVQuantization | None = None) -> None:
        if window <= 0 or max_rollback < 0:
            raise ValueError(f"window must be > 0 and max_rollback >= 0, got {window}, {max_rollback}")
        self.window = window
        self.capacity = window + max_rollback
        self.kv = kv
        self.keys: Stored | None = None
        self.values: Stored | None = None
        self.offset = 0
        self._rollbackable = 0

    def _in_place(self, n: int) -> bool:
        return self.offset + n <= self.capacity or n <= self.capacity - self.window + 1

    def _slot_positions(self, offset: int, size: int) -> mx.array:
        """Position held by each of the first `size` slots after `offset` positions (<0: empty)."""
        last = offset - 1
        return last - (last - mx.arange(size)) % self.capacity

    def make_mask(self, n: int) -> Mask:
        """Boolean `[n, keys]` mask for the next `n` queries, matching `update_and_fetch`'s keys."""
        end = self.offset + n
        if end <= self.window:
            return None if n == 1 else "causal"
        if self._in_place(n):
            key_pos = self._slot_positions(end, min(end, self._size_for(end)))
        else:
            old = self._slot_positions(self.offset, self._size())
            key_pos = mx.concatenate([old, mx.arange(self.offset, end)])
        query_pos = mx.arange(self.offset, end)[:, None]
        key_pos = key_pos[None, :]
        return (key_pos >= 0) & (key_pos <= query_pos) & (key_pos > query_pos - self.window)

    def _size(self) -> int:
        return 0 if self.keys is None else slots(self.keys)

    def _size_for(self, end: int) -> int:
        """Buffer size once `end` positions have been written in place."""
        if end >= self.capacity:
            return self.capacity
        return max(self._size(), min(self.capacity, -(-end // self.step) * self.step))

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Stored, Stored]:
        """Store `[B, H, n, D]` keys/values; return the keys/values the new queries attend to
        (as stored)."""
        return self.update_and_fetch_stored(encode(self.kv, keys), encode(self.kv, values))

    def update_and_fetch_stored(self, keys: Stored, values: Stored) -> tuple[Stored, Stored]:
        """`update_and_fetch` for keys/values already in this cache's stored form."""
        n = slots(keys)
        if self._in_place(n):
            self._resize(keys, values, self._size_for(self.offset + n))
            self._write(keys, values, self.offset)
            self.offset += n
            self._rollbackable = min(self._rollbackable + n, self.capacity - self.window)
            size = min(self.offset, self._size())
            fetch = lambda a: a[..., :size, :]  # noqa: E731
            return each(fetch, self.keys), each(fetch, self.values)
        # Too long to write in place without clobbering keys the chunk itself needs.
        joined = lambda old, new: mx.concatenate([old, new], axis=2)  # noqa: E731
        out_k = keys if self.keys is None else each(joined, self.keys, keys)
        out_v = values if self.values is None else each(joined, self.values, values)
        self._resize(keys, values, self.capacity)
        keep = min(n, self.capacity)
        newest = lambda a: a[..., n - keep :, :]  # noqa: E731
        self._write(each(newest, keys), each(newest, values), self.offset + n - keep)
        self.offset += n
        self._rollbackable = min(self._rollbackable + n, self.capacity - self.window)
        return out_k, out_v

    def _resize(self, keys: Stored, values: Stored, size: int) -> None:
        old = self._size()
        if size <= old:
            return

        def fresh(like: mx.array) -> mx.array:
            B, H, _, D = like.shape
            return mx.zeros((B, H, size - old, D), like.dtype)

        if self.keys is None:
            self.keys, self.values = each(fresh, keys), each(fresh, values)
            return
        grown = lambda buf, like: mx.concatenate([buf, fresh(like)], axis=2)  # noqa: E731
        self.keys, self.values = each(grown, self.keys, keys), each(grown, self.values, values)

    def _write(self, keys: Stored, values: Stored, first_pos: int) -> None:
        """Write consecutive positions starting at `first_pos` into their slots (wrapping)."""
        n = slots(keys)
        start = first_pos % self.capacity
        head = min(n, self.capacity - start)
        for buf, new in zip(parts(self.keys) + parts(self.values), parts(keys) + parts(values)):
            buf[..., start : start + head, :] = new[..., :head, :]
            if head < n:
                buf[..., : n - head, :] = new[..., head:, :]

    @property
    def max_rollback(self) -> int:
        """How many of the newest positions `rollback` may remove without losing window history."""
        return min(self._rollbackable, self.offset)

    def rollback(self, n: int) -> None:
        """Forget the newest `n` positions, as if they had never been fed."""
        if not 0 <= n <= self.max_rollback:
            raise ValueError(f"cannot roll back {n} positions (at most {self.max_rollback})")
        self.offset -= n
        self._rollbackable -= n

    @property
    def nbytes(self) -> int:
        """Bytes held by the key/value buffers (constant once the buffer is full)."""
        return nbytes(self.keys) + nbytes(self.values)


class LayerCaches(list):
    """A model's caches, one per layer, as the engine uses them: they hold the same
    positions, roll back together, and a pass run for its cache alone evaluates `arrays`.
    (A model run by mlx-lm has caches of its own kinds, behind the same four members.)"""

    @property
    def offset(self) -> int:
        """Positions held: the next position fed."""
        return self[0].offset

    @property
    def max_rollback(self) -> int:
        """How many of the newest positions `rollback` may remove."""
        return min(c.max_rollback for c in self)

    def rollback(self, n: int) -> None:
        """Forget the newest `n` positions of every layer."""
        if n:
            for c in self:
                c.rollback(n)

    @property
    def nbytes(self) -> int:
        """Bytes held by every layer's keys and values (as stored: quantized ones packed)."""
        return sum(c.nbytes for c in self)

    def arrays(self) -> list[mx.array]:
        """What the passes so far wrote (evaluate to run them for the cache alone)."""
        return [a for c in self for a in parts(c.keys) + parts(c.values)]


def layer_caches(cache: list) -> LayerCaches:
    """`cache` as `LayerCaches` (a plain list of layer caches is wrapped, not copied)."""
    return cache if isinstance(cache, LayerCaches) else LayerCaches(cache)


def layer_cache(window: int | None, max_rollback: int = 0,
                kv: KVQuantization | None = None) -> KVCache | RollingKVCache:
    """A new cache for one layer: rolling (window + `max_rollback` slots) with a sliding
    window, growing without one; with `kv`, its slots hold quantized keys/values."""
    return KVCache(kv) if window is None else RollingKVCache(window, max_rollback, kv)
