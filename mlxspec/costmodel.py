"""How many tokens to draft: a cost model measured on the running device.

Leviathan et al. 2023: with per-token acceptance rate alpha, a round that drafts k tokens
yields E = (1 - alpha^(k+1)) / (1 - alpha) tokens and costs k * t_draft + t_verify(k+1),
plus, when sampling (T > 0), the cost of drawing from the distributions: k draft picks,
normalising the target's k+1 rows and the rejection step. We pick the k (0 = plain
decoding) with the most expected tokens per second. On Apple GPUs t_verify(k+1) grows
with k, so the best k can be 0: a useless draft must not slow the user down."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import mlx.core as mx
from mlx.utils import tree_flatten

from .feature_draft import FeatureDraft
from .model import Linear, Model, set_weight_first_rows
from .sampling import SamplingParams, process_logits, sample


# Bumped when `measure` changes, so that calibrations cached by an older one are redone
# (2: median of 7 runs instead of 3; one noisy 3-run median had stuck in the cache;
# 3: the cost of sampling; 4: per kind of truncation; 5: the multiplication order).
CALIBRATION_VERSION = 5

# How much faster than plain decoding the model must predict drafting to be before it is
# chosen: rounds also cost what the model leaves out (measured: it predicts 3-5% high).
MARGIN = 0.05


@dataclass
class Timings:
    """Seconds for one draft step, for a target pass over n tokens (n=1: plain decode), and
    what sampling at T > 0 (with the request's top-k / top-p) adds to a round drafting k
    tokens (k=0: to a plain step); `weight_first_rows`: the target passes were timed (and
    run) multiplying inputs of 2..that many rows weight-first (`model.Linear`)."""

    draft_step: float
    target_pass: dict[int, float] = field(default_factory=dict)
    sampling: dict[int, float] = field(default_factory=dict)
    weight_first_rows: int = 0

    def verify(self, n: int) -> float:
        """Time of a target pass over n tokens (interpolated beyond what was measured)."""
        if n in self.target_pass:
            return self.target_pass[n]
        known = sorted(self.target_pass)
        lo = max((k for k in known if k < n), default=known[0])
        hi = min((k for k in known if k > n), default=known[-1])
        if lo == hi:
            return self.target_pass[lo] * n / lo if n > lo else self.target_pass[lo]
        w = (n - lo) / (hi - lo)
        return (1 - w) * self.target_pass[lo] + w * self.target_pass[hi]

    def round(self, k: int, sampled: bool = False) -> float:
        """Time of a round drafting k tokens (k=0: one plain decoding step)."""
        extra = self.sampling.get(k, self.sampling.get(max(self.sampling), 0.0)) if sampled and self.sampling else 0.0
        return k * self.draft_step + self.verify(k + 1) + extra


def expected_tokens(alpha: float | Sequence[float], k: int) -> float:
    """Expected tokens per round drafting k tokens. `alpha` is one acceptance rate for every
    draft position, or per position: the chance that draft j is accepted given that the ones
    before it were (then E = 1 + sum over j <= k of the product of the first j rates)."""
    if isinstance(alpha, (int, float)):
        if alpha >= 1.0:
            return k + 1.0
        return (1.0 - alpha ** (k + 1)) / (1.0 - alpha)
    total, run = 1.0, 1.0
    for j in range(k):
        run *= alpha[min(j, len(alpha) - 1)]
        total += run
    return total


def tokens_per_second(alpha: float | Sequence[float], k: int, timings: Timings, sampled: bool = False) -> float:
    """Predicted throughput of drafting k tokens per round (k=0: plain decoding); `sampled`:
    at T > 0, where drawing from the distributions costs more than an argmax."""
    return expected_tokens(alpha, k) / timings.round(k, sampled)


def best_k(alpha: float | Sequence[float], timings: Timings, k_max: int, margin: float = MARGIN,
           sampled: bool = False) -> int:
    """The draft length in 0..k_max with the highest predicted tokens per second; drafting
    must beat plain decoding by `margin`, since a round also costs what the model leaves out
    (the draft catching up on accepted tokens, a host sync)."""
    rate = lambda k: tokens_per_second(alpha, k, timings, sampled)  # noqa: E731
    k = max(range(k_max + 1), key=rate)
    return k if rate(k) > (1 + margin) * rate(0) else 0


class AcceptanceEstimate:
    """Running estimates of the acceptance rate, overall and per draft position, forgetting
    old rounds slowly.

    Each round tests tokens until the first rejection, so `tested` = accepted (+1 if a
    rejection ended it); accepted / tested is the geometric MLE of alpha. Per position j the
    rate is conditional on drafts 1..j-1 having been accepted; later drafts usually fare
    worse than the first (they build on the draft's own guesses), which one alpha for all
    positions would hide. A position with few tests leans on the one before it. With decay
    0.98 an estimate rests on about the last hundred tested positions: steady enough that a
    few unlucky rounds do not flip the choice of k for a draft near the break-even rate."""

    def __init__(self, prior: float = 0.5, weight: float = 1.0, decay: float = 0.98) -> None:
        self.accepted, self.tested, self.decay = prior * weight, weight, decay
        self.prior, self.weight = prior, weight
        self.position_accepted: list[float] = []
        self.position_tested: list[float] = []

    @property
    def alpha(self) -> float:
        return self.accepted / self.tested

    def per_position(self, k: int) -> list[float]:
        """Conditional acceptance rates for draft positions 1..k."""
        rates, previous = [], self.prior
        for j in range(k):
            acc = self.position_accepted[j] if j < len(self.position_accepted) else 0.0
            tested = self.position_tested[j] if j < len(self.position_tested) else 0.0
            previous = (acc + self.weight * previous) / (tested + self.weight)
            rates.append(previous)
        return rates

    def update(self, accepted: int, drafted: int) -> None:
        """Record a round that drafted `drafted` tokens and accepted the first `accepted`."""
        tested = accepted + (1 if accepted < drafted else 0)
        self.accepted = self.decay * self.accepted + accepted
        self.tested = self.decay * self.tested + tested
        while len(self.position_tested) < tested:
            self.position_accepted.append(0.0)
            self.position_tested.append(0.0)
        for j in range(tested):  # only the positions this round tested learn (and forget)
            self.position_accepted[j] = self.decay * self.position_accepted[j] + (j < accepted)
            self.position_tested[j] = self.decay * self.position_tested[j] + 1


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles kernels, allocates)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def measure(target: Model, draft: Model | FeatureDraft, k_max: int, repeats: int = 7, context: int = 64,
            params: SamplingParams | None = None) -> Timings:
    """Time a draft step and target passes over 1..k_max+1 tokens after `context` tokens, and
    the cost of sampling with `params` (default: plain temperature sampling). Passes over a
    few tokens are timed in both multiplication orders of `model.Linear`; the target is left
    set to the faster (`Timings.weight_first_rows`)."""
    tokens = mx.array([[(7 * i + 3) % min(target.args.vocab_size, draft.args.vocab_size) for i in range(context + k_max + 1)]])

    def pass_over(model: Model, n: int):
        cache = model.make_cache(max_rollback=k_max + 1)
        model(tokens[:, :context], cache)
        mx.eval([c.keys for c in cache])

        def run():
            mx.eval(model(tokens[:, context : context + n], cache))
            for c in cache:
                c.rollback(n)

        return run

    draft_step = _time(pass_over(draft, 1) if isinstance(draft, Model) else feature_step(draft, target, context), repeats)
    set_weight_first_rows(target, 0)
    target_pass = {n: _time(pass_over(target, n), repeats) for n in range(1, k_max + 2)}
    rows = 0
    if any(isinstance(m, Linear) for m in target.modules()):
        # the other multiplication order for the passes a round verifies: kept up to the
        # largest n where it is faster for every count up to n
        set_weight_first_rows(target, k_max + 1)
        for n in range(2, k_max + 2):
            t = _time(pass_over(target, n), repeats)
            if t >= target_pass[n]:
                break
            target_pass[n], rows = t, n
        set_weight_first_rows(target, rows)
    sampling = sampling_cost(target.args.vocab_size, draft_support(draft), k_max, params, repeats)
    return Timings(draft_step, target_pass, sampling, rows)


def draft_support(draft: Model | FeatureDraft) -> int:
    """How many tokens the draft's distributions cover (its head's subset, or the vocabulary)."""
    if isinstance(draft, FeatureDraft):
        return int(draft.token_ids.size)
    return draft.args.head_vocab_size or draft.args.vocab_size


def sampling_cost(vocab: int, support: int, k_max: int, params: SamplingParams | None = None,
                  repeats: int = 7) -> dict[int, float]:
    """Seconds that sampling with `params` (default: plain temperature) adds to a round
    drafting k = 0..k_max tokens over greedy selection: k draft picks over `support` tokens,
    processing the target's k+1 rows, the rejection step; k = 0: drawing one token."""
    from .speculative import verify

    params = params or SamplingParams(temperature=1.0)
    if params.greedy:
        return {k: 0.0 for k in range(k_max + 1)}
    target = mx.random.normal((1, k_max + 1, vocab))
    draft = mx.random.normal((1, k_max, support))
    ids = mx.arange(support)
    mx.eval(target, draft, ids)

    def sampled(k: int):
        if k == 0:
            return lambda: mx.eval(sample(target[:, 0], params))

        def run():
            picks = [process_logits(draft[:, i], params) for i in range(k)]
            tokens = mx.stack([mx.random.categorical(lp) for lp in picks], axis=1)
            mx.eval(verify(process_logits(target[:, : k + 1], params), mx.stack(picks, axis=1), tokens, support=ids))
        return run

    def greedy(k: int):
        if k == 0:
            return lambda: mx.eval(mx.argmax(target[:, 0], axis=-1))

        def run():
            tokens = mx.stack([mx.argmax(draft[:, i], axis=-1) for i in range(k)], axis=1)
            mx.eval(verify(target[:, : k + 1], None, tokens, greedy=True))
        return run

    return {k: max(0.0, _time(sampled(k), repeats) - _time(greedy(k), repeats)) for k in range(k_max + 1)}


def feature_step(draft: FeatureDraft, target: Model, context: int):
    """One step of a feature draft after `context` positions: its blocks, then the target's
    head over the draft's subset of tokens."""
    from .feature_draft import target_subset_head

    head, embed = target_subset_head(target, draft.token_ids), target.model.embed_tokens
    features = mx.zeros((1, context + 1, target.args.hidden_size))
    tokens = mx.array([[(7 * i + 3) % target.args.vocab_size for i in range(context + 1)]])
    cache = draft.make_cache()
    mx.eval(draft(features[:, :context], embed(tokens[:, :context]), cache))

    def run():
        mx.eval(head(draft(features[:, context:], embed(tokens[:, context:]), cache)))
        for c in cache:
            c.rollback(1)

    return run


def _fingerprint(target: Model, draft: Model, k_max: int) -> str:
    def describe(model: Model) -> dict:
        params = sorted((k, str(v.dtype), v.shape) for k, v in tree_flatten(model.parameters()))
        return {"args": asdict(model.args), "params": params[:4], "n": len(params)}

    key = json.dumps([CALIBRATION_VERSION, describe(target), describe(draft), str(mx.default_device()), mx.__version__, k_max],
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where calibrations are kept: $MLXSPEC_CACHE, else ~/.cache/mlxspec."""
    return Path(os.environ.get("MLXSPEC_CACHE") or Path.home() / ".cache" / "mlxspec")


def calibrate(target: Model, draft: Model | FeatureDraft, k_max: int, params: SamplingParams | None = None) -> Timings:
    """Timings for this model pair on this device (sampling as with `params`; default: plain
    temperature), measured once and cached on disk. The model passes are measured once per
    pair; the sampling cost once per kind of truncation (`SamplingParams.truncation`). Sets
    the target to the multiplication order the measurement found faster (see `measure`)."""
    params = params or SamplingParams(temperature=1.0)
    path = cache_dir() / "calibration.json"
    key, kind = _fingerprint(target, draft, k_max), params.truncation
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        stored = {}
    entry = stored.get(key)
    if entry is None:
        timings = measure(target, draft, k_max, params=params)
        entry = stored[key] = {"draft_step": timings.draft_step, "target_pass": timings.target_pass,
                               "sampling": {kind: timings.sampling}, "weight_first_rows": timings.weight_first_rows}
        _store(path, stored)
    elif kind not in entry["sampling"]:
        entry["sampling"][kind] = sampling_cost(target.args.vocab_size, draft_support(draft), k_max, params)
        _store(path, stored)
    set_weight_first_rows(target, entry["weight_first_rows"])
    return Timings(entry["draft_step"], {int(n): t for n, t in entry["target_pass"].items()},
                   {int(k): t for k, t in entry["sampling"][kind].items()}, entry["weight_first_rows"])


def _store(path: Path, stored: dict) -> None:
    """Write the calibration cache atomically (a read-only home only costs a re-measurement)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(stored, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
