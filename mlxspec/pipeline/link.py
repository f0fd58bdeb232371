"""What passes between the ranks of a pipeline, and each end of it.

Rank 0 runs everything a single process runs (tokenizer, embedding, its own blocks, the
final norm and head, the draft, the speculative loop); ranks 1..n-1 each hold a run of
the following blocks. On rank 0 the other ranks' blocks are one more "layer",
`RemoteStages`, whose cache is a `RemoteCache`: so the engine drives a pipeline exactly as
it drives one process, and every rank rolls back the same positions because rank 0 tells
it to.

Messages go round the ring 0 -> 1 -> ... -> n-1 (-> 0 for the hidden states coming back):
first a header (an int32 vector: operation, cache id, two arguments, the dtype code, the
number of taps), which every rank passes on, then for a forward pass the indices of the
blocks whose outputs a feature draft reads ("taps", when there are any; passed on too) and
the hidden states [B, L, dim]. A rank appends the outputs of its tapped blocks to the
hidden states it passes on, so rank 0 gets back [B, L, dim * (1 + its taps)].
"""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn

from ..errors import InputError
from ..models import KVQuantization, Model
from ..models.cache import LayerCaches, Mask, layer_cache
from ..models.mistral import MistralModel, run_blocks

NEW, FREE, ROLLBACK, FORWARD, STOP = range(5)
DTYPES = (mx.float32, mx.float16, mx.bfloat16)
NO_CACHE = -1


class Link:
    """Rank 0's end of the ring: sends commands and hidden states to rank 1, receives the
    last rank's output. Caches freed on rank 0 are freed on the others with the next command."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.next_id = 0
        self.freed: list[int] = []
        self.closed = False

    def send_header(self, op: int, cache_id: int = NO_CACHE, a: int = 0, b: int = 0, dtype: int = 0,
                    taps: int = 0) -> None:
        """One command to every other rank (rank 1 passes it on)."""
        if self.closed:
            raise InputError("the pipeline was closed: its other ranks have stopped")
        pending, self.freed = self.freed, []
        for freed in pending:
            mx.eval(mx.distributed.send(mx.array([FREE, freed, 0, 0, 0, 0], dtype=mx.int32), 1, group=self.group))
        mx.eval(mx.distributed.send(mx.array([op, cache_id, a, b, dtype, taps], dtype=mx.int32), 1, group=self.group))

    def release(self, cache_id: int) -> None:
        """Free cache `cache_id` on the other ranks with the next command (called when rank 0's
        handle is collected; never sends, as a collection can happen in the middle of a send)."""
        self.freed.append(cache_id)

    def new_cache(self, max_rollback: int) -> int:
        """A new set of caches on every other rank; its id."""
        self.next_id += 1
        self.send_header(NEW, self.next_id, max_rollback)
        return self.next_id

    def forward(self, h: mx.array, cache_id: int, taps: list[int]) -> mx.array:
        """`h` [B, L, dim] through every other rank's blocks (continuing cache `cache_id`),
        followed by the outputs of blocks `taps` (the whole model's indices, ascending)."""
        B, L, dim = h.shape
        self.send_header(FORWARD, cache_id, B, L, DTYPES.index(h.dtype), len(taps))
        if taps:
            mx.eval(mx.distributed.send(mx.array(taps, dtype=mx.int32), 1, group=self.group))
        mx.eval(mx.distributed.send(h, 1, group=self.group))
        return mx.distributed.recv((B, L, dim * (1 + len(taps))), h.dtype, self.group.size() - 1, group=self.group)

    def close(self) -> None:
        """Tell the other ranks to stop (they exit); idempotent."""
        if not self.closed:
            self.send_header(STOP)
            self.closed = True


class RemoteCache:
    """Rank 0's handle on the other ranks' caches for one sequence: the offset is mirrored
    here, a rollback is sent on."""

    keys = values = None  # held by the other ranks
    nbytes = 0  # (on this rank)

    def __init__(self, link: Link, max_rollback: int) -> None:
        self.link, self.offset, self.max_rollback = link, 0, max_rollback
        self.id = link.new_cache(max_rollback)
        weakref.finalize(self, link.release, self.id)

    def rollback(self, n: int) -> None:
        """Forget the newest `n` positions on every other rank (rank 0's own caches,
        rolled back first, have checked that they can)."""
        self.link.send_header(ROLLBACK, self.id, n)
        self.offset -= n


class RemoteStages(nn.Module):
    """The blocks of ranks 1..n-1, as one layer of rank 0's model."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self._link = link

    def __call__(self, x: mx.array, mask: Mask, cache: RemoteCache | None, taps: list[int] | None = None) -> mx.array:
        if cache is not None and not isinstance(cache, RemoteCache):
            raise InputError("a pipeline runs one sequence at a time (batches are not supported across ranks yet)")
        out = self._link.forward(x, NO_CACHE if cache is None else cache.id, taps or [])
        if cache is not None:
            cache.offset += x.shape[1]
        return out


class LeadStack(MistralModel):
    """Rank 0's stack: the embedding, its own blocks, then the other ranks' as one
    `RemoteStages` layer, and the final norm. Taps name blocks of the whole model."""

    def blocks(self, h: mx.array, cache: list | None, taps: Sequence[int] = ()) -> mx.array:
        mask, caches = self.block_inputs(h.shape[1], cache)
        own, dim = len(self.layers) - 1, h.shape[-1]
        h = run_blocks(self.layers[:own], h, mask, caches[:own], [t for t in taps if t < own])
        out = self.layers[own](h[..., :dim], mask, caches[own], [t for t in taps if t >= own])
        return mx.concatenate([out[..., :dim], h[..., dim:], out[..., dim:]], axis=-1) if taps else out


class LeadModel(Model):
    """Rank 0's model: the embedding, its blocks, then the other ranks' blocks as one
    `RemoteStages` layer (attached once every rank has loaded), the norm and the head."""

    link: Link | None = None
    stack = LeadStack
    blocks_in_all = 0

    def attach(self, link: Link, blocks_in_all: int) -> None:
        """Append the other ranks' blocks, reached through `link` (`blocks_in_all`: the whole model's)."""
        self.link, self.blocks_in_all = link, blocks_in_all
        self.model.layers.append(RemoteStages(link))

    @property
    def depth(self) -> int:
        return self.blocks_in_all

    def make_cache(self, max_rollback: int = 0, kv: KVQuantization | None = None) -> list:
        """Rank 0's own layers' caches, then the handle on the other ranks' caches (full
        precision: a quantized cache is refused, the other ranks' caches have no such form)."""
        if kv is not None:
            raise InputError("kv_bits: a pipelined target keeps full-precision caches; run --pipeline without --kv-bits")
        own = [layer_cache(self.args.sliding_window, max_rollback) for _ in self.layers[:-1]]
        return LayerCaches([*own, RemoteCache(self.link, max_rollback)])


def serve(stage: nn.Module, first: int, group: Any) -> None:
    """A worker rank's loop: carry out rank 0's commands with this rank's blocks
    (`stage.model.blocks`, the model's blocks from `first` on) until told to stop."""
    rank, size = group.rank(), group.size()
    caches: dict[int, list] = {}
    header = mx.zeros((6,), dtype=mx.int32)
    while True:
        received = mx.distributed.recv_like(header, rank - 1, group=group)
        mx.eval(received)
        if rank + 1 < size:
            mx.eval(mx.distributed.send(received, rank + 1, group=group))
        op, cache_id, a, b, dtype, taps = received.tolist()
        if op == STOP:
            return
        if op == NEW:
            caches[cache_id] = [layer_cache(stage.args.sliding_window, a) for _ in stage.model.layers]
        elif op == FREE:
            caches.pop(cache_id, None)
        elif op == ROLLBACK:
            for c in caches[cache_id]:
                c.rollback(a)
        elif op == FORWARD:
            tapped = _receive_taps(taps, group)
            out = _forward(stage, first, tapped, (a, b), DTYPES[dtype], None if cache_id == NO_CACHE else caches[cache_id],
                           group)
            mx.eval(mx.distributed.send(out, (rank + 1) % size, group=group))


def _receive_taps(count: int, group: Any) -> list[int]:
    """The tapped blocks of a forward pass (passed on to the next rank)."""
    if not count:
        return []
    taps = mx.distributed.recv_like(mx.zeros((count,), dtype=mx.int32), group.rank() - 1, group=group)
    mx.eval(taps)
    if group.rank() + 1 < group.size():
        mx.eval(mx.distributed.send(taps, group.rank() + 1, group=group))
    return taps.tolist()


def _forward(stage: nn.Module, first: int, taps: list[int], shape: tuple[int, int], dtype: mx.Dtype,
             cache: list | None, group: Any) -> mx.array:
    """The hidden states (and the taps so far) from the previous rank through this rank's
    blocks, its own taps appended."""
    dim, end = stage.args.hidden_size, first + len(stage.model.layers)
    carried = sum(1 for t in taps if t < first)
    x = mx.distributed.recv((*shape, dim * (1 + carried)), dtype, group.rank() - 1, group=group)
    out = stage.model.blocks(x[..., :dim], cache, [t - first for t in taps if first <= t < end])
    return mx.concatenate([out[..., :dim], x[..., dim:], out[..., dim:]], axis=-1).astype(dtype)
