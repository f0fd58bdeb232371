"""How many tokens to draft: a cost model measured on the running device.

Leviathan et al. 2023: with per-token acceptance rate alpha, a round that drafts k tokens
yields E = (1 - alpha^(k+1)) / (1 - alpha) tokens and costs about k * t_draft + t_verify(k+1).
"About": a round also builds graphs it cannot overlap with computing, verifies, rolls back,
lets the draft catch up on the accepted tokens and, when sampling (T > 0), draws from the
distributions; on MLX's CPU backend these add 5-15% to the sum of the passes, enough to
turn a predicted gain into a loss. So the calibration times whole rounds as the loop runs
them, for k = 0 (a plain decoding step) .. k_max and for the request's kind of sampling,
and the model divides expected tokens by those times. We pick the k (0 = plain decoding)
with the most expected tokens per second. On Apple GPUs t_verify(k+1) grows with k, so
the best k can be 0: a useless draft must not slow the user down."""

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
from .sampling import SamplingParams


# Bumped when `measure` changes, so that calibrations cached by an older one are redone
# (2: median of 7 runs instead of 3; one noisy 3-run median had stuck in the cache;
# 3: the cost of sampling; 4: per kind of truncation; 5: the multiplication order;
# 6: whole rounds timed, per kind of sampling, instead of a modelled sampling cost).
CALIBRATION_VERSION = 6

# How much faster than plain decoding the model must predict drafting to be before it is
# chosen: the timings and the acceptance estimate are noisy, and near break-even a wrong
# choice costs more than it can gain.
MARGIN = 0.05


@dataclass
class Timings:
    """Seconds on this device for one pair and one kind of sampling: a draft step, a target
    pass over n tokens (n=1: plain decode), and `rounds`, whole rounds drafting k tokens as
    the speculative loop runs them (k=0: a plain decoding step); `weight_first_rows`: the
    target's passes were timed (and run) multiplying inputs of 2..that many rows
    weight-first (`model.Linear`). Without `rounds`, a round is modelled as its passes."""

    draft_step: float
    target_pass: dict[int, float] = field(default_factory=dict)
    rounds: dict[int, float] = field(default_factory=dict)
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

    def round(self, k: int) -> float:
        """Time of a round drafting k tokens (k=0: one plain decoding step)."""
        if k in self.rounds:
            return self.rounds[k]
        return k * self.draft_step + self.verify(k + 1)


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


def tokens_per_second(alpha: float | Sequence[float], k: int, timings: Timings) -> float:
    """Predicted throughput of drafting k tokens per round (k=0: plain decoding)."""
    return expected_tokens(alpha, k) / timings.round(k)


def best_k(alpha: float | Sequence[float], timings: Timings, k_max: int, margin: float = MARGIN) -> int:
    """The draft length in 0..k_max with the highest predicted tokens per second; drafting
    must beat plain decoding by `margin`."""
    rate = lambda k: tokens_per_second(alpha, k, timings)  # noqa: E731
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


def made_up_tokens(n: int, vocab: int) -> list[int]:
    """The context every timing runs on: n token ids spread over the vocabulary (what the
    passes cost does not depend on which tokens they are)."""
    return [(7 * i + 3) % vocab for i in range(n)]


def _time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles kernels, allocates)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def measure(target: Model, draft: Model | FeatureDraft, k_max: int, repeats: int = 7, context: int = 64) -> Timings:
    """Time a draft step and target passes over 1..k_max+1 tokens after `context` tokens
    (the parts of a round; `round_times` times whole rounds). Passes over a few tokens are
    timed in both multiplication orders of `model.Linear`; the target is left set to the
    faster (`Timings.weight_first_rows`)."""
    tokens = mx.array([made_up_tokens(context + k_max + 1, min(target.args.vocab_size, draft.args.vocab_size))])

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
    return Timings(draft_step, target_pass, weight_first_rows=rows)


def round_times(target: Model, draft: Model | FeatureDraft, k_max: int, params: SamplingParams,
                repeats: int = 5, context: int = 64) -> dict[int, float]:
    """Seconds of a speculative round drafting k = 1..k_max tokens, and of a plain decoding
    step (k = 0), sampling with `params`: the loop itself (`SpeculativeDecoder`) runs on a
    made-up context, so whatever a round costs beyond its passes is in the figure. The
    sizes take turns, so that a slow spell of a shared machine slows them alike (the model
    rests on their ratios). Sampled rounds draw from MLX's global random stream."""
    from .speculative import SpeculativeDecoder

    vocab = min(target.args.vocab_size, draft.args.vocab_size)
    decoder = SpeculativeDecoder(target, draft, params, k_max, adaptive=False)
    decoder.alpha = AcceptanceEstimate()  # not the process-wide estimate of real requests
    decoder.prefill(made_up_tokens(context, vocab))
    plain_steps = 4  # plain decoding pipelines its steps: time a few in a row
    samples: dict[int, list[float]] = {k: [] for k in range(k_max + 1)}
    for repeat in range(repeats + 1):  # the first pass warms up
        for k in range(k_max + 1):
            start = time.perf_counter()
            if k:
                decoder.round(k)
            else:
                for _ in decoder.plain(plain_steps):
                    pass
            if repeat:
                samples[k].append((time.perf_counter() - start) / (1 if k else plain_steps))
    return {k: sorted(v)[len(v) // 2] for k, v in samples.items()}


def sampling_kind(params: SamplingParams) -> str:
    """What a round's cost depends on in the sampling settings: greedy, or the truncations
    of a draw (`SamplingParams.truncation`; each sorts the vocabulary), not the temperature."""
    return "greedy" if params.greedy else params.truncation


def feature_step(draft: FeatureDraft, target: Model, context: int):
    """One step of a feature draft after `context` positions: its blocks, then the target's
    head over the draft's subset of tokens."""
    from .feature_draft import target_subset_head

    head, embed = target_subset_head(target, draft.token_ids), target.model.embed_tokens
    features = mx.zeros((1, context + 1, target.args.hidden_size))
    tokens = mx.array([made_up_tokens(context + 1, target.args.vocab_size)])
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
    """Timings for this model pair on this device, sampling as with `params` (default:
    greedy), measured once and cached on disk: the passes once per pair, whole rounds once
    per kind of sampling (`sampling_kind`). Sets the target to the multiplication order the
    measurement found faster (see `measure`)."""
    params = params or SamplingParams()
    path = cache_dir() / "calibration.json"
    key, kind = _fingerprint(target, draft, k_max), sampling_kind(params)
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        stored = {}
    entry = stored.get(key)
    if entry is None:
        timings = measure(target, draft, k_max)
        entry = stored[key] = {"draft_step": timings.draft_step, "target_pass": timings.target_pass,
                               "weight_first_rows": timings.weight_first_rows, "rounds": {}}
    set_weight_first_rows(target, entry["weight_first_rows"])
    if kind not in entry["rounds"]:
        entry["rounds"][kind] = round_times(target, draft, k_max, params)
        _store(path, stored)
    return Timings(entry["draft_step"], {int(n): t for n, t in entry["target_pass"].items()},
                   {int(k): t for k, t in entry["rounds"][kind].items()}, entry["weight_first_rows"])


def _store(path: Path, stored: dict) -> None:
    """Write the calibration cache atomically (a read-only home only costs a re-measurement)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(stored, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
