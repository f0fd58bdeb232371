"""Measuring what a round costs on this device, and keeping the measurement on disk.

The speculative loop itself runs on a made-up context (`Generation` with a fixed draft
length and a random stream of its own), timing whole rounds for k = 0 (a plain step) ..
k_max, sizes and multiplication orders taking turns so that a slow spell of a shared
machine hits them alike (the policy rests on their ratios). Both multiplication orders of
the target's dense layers are timed (`mlxspec.models.linear`); the weight-first one is kept
for the round sizes where it is faster. Rounds are measured once per pair and kind of
sampling and cached in `<cache>/calibration.json`; a cache that cannot be read, or was
written by another version, is measured again with a warning, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx

from ..drafts import Draft, DraftKind, Drafter, as_draft, one_row
from ..drafts.protocol import Outlook, Pick, Proposal, point_mass
from ..models import KVQuantization, Linear, Model, fingerprint as module_fingerprint, kv_keyword, set_weight_first_rows
from ..reading import JSON_LIMIT, read_file
from .policy import FixedK, Timings
from .sampling import RandomKeys, SamplingParams
from .speculative import Generation

# Bumped whenever what is measured or how it is stored changes: older entries are redone.
CALIBRATION_VERSION = 8

Progress = Callable[[int, int], None]  # (rounds timed so far, rounds to time)


class CalibrationWarning(UserWarning):
    """The calibration cache could not be used as it was and is being measured again."""


def sampling_kind(params: SamplingParams) -> str:
    """What a round's cost depends on in the sampling settings: greedy, or the truncations
    of a draw (`SamplingParams.truncation`; each sorts the vocabulary), not the temperature."""
    return "greedy" if params.greedy else params.truncation


def made_up_tokens(n: int, vocab: int) -> list[int]:
    """The context every timing runs on: n token ids spread over the vocabulary (what the
    passes cost does not depend on which tokens they are)."""
    return [(7 * i + 3) % vocab for i in range(n)]


def time_rounds(target: Model, draft: Draft, k_max: int, params: SamplingParams, orders: tuple[int, ...] = (0,),
                repeats: int = 5, context: int = 64, progress: Progress | None = None,
                kv: KVQuantization | None = None) -> dict[int, dict[int, float]]:
    """Median seconds of a round drafting k = 0..k_max tokens, per multiplication order
    (`weight_first_rows` of the target), sampling with `params`, the caches quantized as `kv`
    says. The target is left in the order it was in."""
    before = next((m.weight_first_rows for m in target.modules() if isinstance(m, Linear)), 0)
    draft = as_draft(draft)
    drafter = one_row(FullRounds(draft.timed.drafter(target, k_max, context, params.greedy, **kv_keyword(kv))))
    generation = Generation(target, drafter, FixedK(k_max), params, RandomKeys(0), prefill_chunk=context,
                            cache=target.make_cache(max_rollback=k_max, **kv_keyword(kv)))
    generation.prefill(made_up_tokens(context, min(target.args.vocab_size, draft.vocabulary(target))))
    plain_steps = 4  # plain decoding pipelines its steps: time a few in a row
    samples: dict[int, dict[int, list[float]]] = {o: {k: [] for k in range(k_max + 1)} for o in orders}
    total, done = len(orders) * (k_max + 1) * (repeats + 1), 0
    try:
        for repeat in range(repeats + 1):  # the first pass warms up (and compiles each size)
            for order in orders:
                set_weight_first_rows(target, order)
                for k in range(k_max + 1):
                    seconds = _timed(generation, k, plain_steps)
                    if repeat:
                        samples[order][k].append(seconds)
                    done += 1
                    if progress is not None:
                        progress(done, total)
    finally:
        set_weight_first_rows(target, before)
    return {o: {k: sorted(v)[len(v) // 2] for k, v in by_k.items()} for o, by_k in samples.items()}


class FullRounds:
    """A drafter as the calibration times it: a proposal short of k tokens (prompt lookup
    without a match, a re-spelled draft) is filled up with the newest token, proposed with
    all its mass, so every round of size k is timed at size k (what a round costs does not
    depend on which tokens it verifies)."""

    def __init__(self, drafter: Drafter) -> None:
        self.drafter = drafter
        self.mode, self.feature_layers, self.varies = drafter.mode, drafter.feature_layers, drafter.varies

    def outlook(self, last: int) -> Outlook:
        return self.drafter.outlook(last)

    def extend(self, tokens: list[int], features: mx.array | None) -> None:
        self.drafter.extend(tokens, features)

    def propose(self, last: int, k: int, pick: Pick) -> Proposal:
        proposal = self.drafter.propose(last, k, pick)
        short = k - proposal.tokens.shape[1]
        if short <= 0:
            return proposal
        tokens = proposal.tokens[0].tolist() + [last] * short
        if proposal.logprobs is None:
            return Proposal(mx.array([tokens], dtype=mx.int32), None, None)
        return point_mass(tokens)

    def settle(self, accepted: int, drafted: list[int], features: mx.array | None) -> None:
        self.drafter.settle(accepted, drafted, features)


def _timed(generation: Generation, k: int, plain_steps: int) -> float:
    """Seconds of one round drafting k tokens, or of one plain step (k = 0: the mean over a
    pipelined run). An untimed round follows the plain steps, so that the next timed round
    does not pay the drafter's catch-up over them, which rounds in a row never do."""
    start = time.perf_counter()
    if k:
        generation.round(k)
        return time.perf_counter() - start
    for _ in generation.plain(plain_steps):
        pass
    seconds = (time.perf_counter() - start) / plain_steps
    generation.round(1)
    return seconds


def faster_order(standard: dict[int, float], weight_first: dict[int, float]) -> tuple[int, dict[int, float]]:
    """`weight_first_rows` (the weight-first order up to the largest round size where it is
    faster for every size up to it) and the round times in that order."""
    rows = 0
    for k in sorted(k for k in standard if k > 0):
        if weight_first[k] >= standard[k]:
            break
        rows = k + 1
    return rows, {k: weight_first[k] if 0 < k < rows else t for k, t in standard.items()}


def measure(target: Model, draft: DraftKind, k_max: int, params: SamplingParams, rows: int | None = None,
            progress: Progress | None = None, kv: KVQuantization | None = None) -> Timings:
    """Time the rounds; with `rows` None, in both orders, keeping the faster (see `faster_order`)."""
    dense = any(isinstance(m, Linear) for m in target.modules())
    if rows is not None or not dense:
        rows = rows or 0
        return Timings(time_rounds(target, draft, k_max, params, (rows,), progress=progress, kv=kv)[rows], rows)
    both = time_rounds(target, draft, k_max, params, (0, k_max + 1), progress=progress, kv=kv)
    rows, rounds = faster_order(both[0], both[k_max + 1])
    return Timings(rounds, rows)


def fingerprint(target: Model, draft: DraftKind, k_max: int, kv: KVQuantization | None = None) -> str:
    """What a calibration is valid for: the pair's shapes, the device, the MLX version, k_max
    (and a quantized cache's bits and group size)."""
    quantized = [] if kv is None else [kv.bits, kv.group_size]
    key = json.dumps([CALIBRATION_VERSION, module_fingerprint(target), draft.fingerprint(), str(mx.default_device()),
                      mx.__version__, k_max, *quantized], sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _valid_rounds(rounds: Any, k_max: int) -> bool:
    return (isinstance(rounds, dict) and set(rounds) == {str(k) for k in range(k_max + 1)}
            and all(isinstance(t, (int, float)) and 0 < t < math.inf for t in rounds.values()))


class CalibrationCache:
    """The calibrations kept in one JSON file: {"version", "entries": {fingerprint:
    {"weight_first_rows", "rounds": {kind: {k: seconds}}}}}. Reading never fails: what
    cannot be used is dropped with a `CalibrationWarning`. Writing is atomic, and a
    read-only folder only costs a measurement next time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any]:
        """The entries stored, {} when there is no usable file."""
        try:
            data = json.loads(read_file(self.path, JSON_LIMIT))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            return self._unusable(f"unreadable ({type(exc).__name__})")
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            return self._unusable("not a calibration file")
        if data.get("version") != CALIBRATION_VERSION:
            return self._unusable(f"written by calibration version {data.get('version')!r}")
        return data["entries"]

    def _unusable(self, why: str) -> dict[str, Any]:
        warnings.warn(f"calibration cache {self.path}: {why}; measuring again", CalibrationWarning, stacklevel=4)
        return {}

    def entry(self, entries: dict[str, Any], key: str, kind: str, k_max: int) -> tuple[int | None, dict | None]:
        """(weight_first_rows, rounds) stored for this pair and kind; None for what is missing or damaged."""
        entry = entries.get(key)
        if entry is None:
            return None, None
        by_kind = entry.get("rounds") if isinstance(entry, dict) else None
        rows = entry.get("weight_first_rows") if isinstance(entry, dict) else None
        rounds = by_kind.get(kind) if isinstance(by_kind, dict) else None
        usable = (isinstance(by_kind, dict) and type(rows) is int and 0 <= rows <= k_max + 1
                  and (rounds is None or _valid_rounds(rounds, k_max)))
        if not usable:
            warnings.warn(f"calibration cache {self.path}: a damaged entry; measuring again", CalibrationWarning,
                          stacklevel=3)
            return None, None
        return rows, rounds

    def write(self, entries: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"version": CALIBRATION_VERSION, "entries": entries}, indent=1))
            os.replace(tmp, self.path)
        except OSError:  # a read-only or full disk only costs a measurement next time
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass


def calibrate(target: Model, draft: Draft, k_max: int, params: SamplingParams | None = None, *,
              cache_dir: Path, recalibrate: bool = False, progress: Progress | None = None,
              kv: KVQuantization | None = None) -> Timings:
    """Round times for this pair on this device, sampling as with `params` (default: greedy):
    read from the cache in `cache_dir`, else (or with `recalibrate`) measured and stored.
    The multiplication order is chosen once per pair; the caller applies it to the target
    (`set_weight_first_rows(target, timings.weight_first_rows)`). With `kv` the rounds run
    over quantized caches, as a session with `kv_bits` decodes."""
    params, draft = params or SamplingParams(), as_draft(draft)
    cache = CalibrationCache(cache_dir / "calibration.json")
    entries = cache.read()
    key, kind = fingerprint(target, draft, k_max, kv), sampling_kind(params)
    rows, rounds = (None, None) if recalibrate else cache.entry(entries, key, kind, k_max)
    if rounds is not None:
        return Timings({int(k): t for k, t in rounds.items()}, rows)
    timings = measure(target, draft, k_max, params, rows, progress, kv)
    old = entries.get(key) if rows is not None else None
    entry = {"weight_first_rows": timings.weight_first_rows, "rounds": dict(old["rounds"]) if old else {}}
    entry["rounds"][kind] = {str(k): t for k, t in timings.rounds.items()}
    entries[key] = entry
    cache.write(entries)
    return timings
