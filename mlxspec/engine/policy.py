"""How many tokens to draft: the cost model and the draft-length policies. Pure: no I/O, no
timing (the calibration measures, the session keeps what outlives a request).

Leviathan et al. 2023: if draft j is accepted with probability alpha_j given that the ones
before it were, a round that drafts k tokens yields E = 1 + sum_{j<=k} prod_{i<=j} alpha_i
tokens. A round costs more than its passes (graphs built while nothing computes,
verification, rollback, the draft catching up, the draws), so the calibration times whole
rounds as the loop runs them, and the model divides expected tokens by those times. The
best k can be 0 (plain decoding): a useless draft must not slow the user down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ..drafts.protocol import MODEL_OUTLOOK, Outlook

# How much faster than plain decoding the model must predict drafting to be before it is
# chosen: the timings and the acceptance estimate are noisy, and near break-even a wrong
# choice costs more than it can gain.
MARGIN = 0.05


@dataclass
class Timings:
    """Seconds of a round drafting k tokens as the speculative loop runs it (k = 0: one plain
    decoding step), for one pair, one kind of sampling and this device; and
    `weight_first_rows`, the multiplication order the target's passes were timed in and must
    run in (`mlxspec.models.linear`)."""

    rounds: dict[int, float] = field(default_factory=dict)
    weight_first_rows: int = 0

    def round(self, k: int) -> float:
        """Time of a round drafting k tokens; beyond the largest measured k, extrapolated
        linearly from the last two."""
        if k in self.rounds:
            return self.rounds[k]
        top = max(self.rounds)
        step = self.rounds[top] - self.rounds.get(top - 1, 0.0) if top > 0 else self.rounds[top]
        return self.rounds[top] + (k - top) * step


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
        self.plain_steps = 0  # plain decoding steps since the last drafted round

    @property
    def alpha(self) -> float:
        """The overall acceptance rate."""
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
        """Record a round that drafted `drafted` tokens and accepted the first `accepted`
        (`drafted` = 0: a plain decoding step, which only counts towards the next probe)."""
        if drafted == 0:
            self.plain_steps += 1
            return
        self.plain_steps = 0
        tested = accepted + (1 if accepted < drafted else 0)
        self.accepted = self.decay * self.accepted + accepted
        self.tested = self.decay * self.tested + tested
        while len(self.position_tested) < tested:
            self.position_accepted.append(0.0)
            self.position_tested.append(0.0)
        for j in range(tested):  # only the positions this round tested learn (and forget)
            self.position_accepted[j] = self.decay * self.position_accepted[j] + (j < accepted)
            self.position_tested[j] = self.decay * self.position_tested[j] + 1


class DraftPolicy(Protocol):
    """What the speculative loop asks before each round. `budget` is how many tokens the
    request still wants (>= 1); a round drafting k tokens yields up to k + 1."""

    k_max: int

    def next_k(self, budget: int, outlook: Outlook = MODEL_OUTLOOK) -> int:
        """Tokens to draft in the next round, at most min(k_max, budget - 1, outlook.most);
        0: plain steps. `outlook` is what the drafter would propose next."""
        ...

    def plain_steps(self, budget: int) -> int:
        """How many plain decoding steps to run in a row (1..budget) when `next_k` gave 0."""
        ...

    def observe(self, k: int, accepted: int) -> None:
        """A round drafted k tokens and the target accepted the first `accepted` (k = 0: a
        plain decoding step ran)."""
        ...


class Plain:
    """No drafting: plain decoding to the end of the budget."""

    k_max = 0

    def next_k(self, budget: int, outlook: Outlook = MODEL_OUTLOOK) -> int:
        return 0

    def plain_steps(self, budget: int) -> int:
        return budget

    def observe(self, k: int, accepted: int) -> None:
        pass


class FixedK:
    """Always draft k tokens (fewer only at the end of the budget)."""

    def __init__(self, k: int) -> None:
        self.k_max = k

    def next_k(self, budget: int, outlook: Outlook = MODEL_OUTLOOK) -> int:
        return min(self.k_max, budget - 1, outlook.most)

    def plain_steps(self, budget: int) -> int:
        return 1

    def observe(self, k: int, accepted: int) -> None:
        pass


class Heuristic(FixedK):
    """transformers' schedule: start at min(k_max, 5); +2 after a round that was accepted
    whole, -1 (never below 1) after one that was not."""

    def __init__(self, k_max: int) -> None:
        super().__init__(k_max)
        self.k = min(k_max, 5)

    def next_k(self, budget: int, outlook: Outlook = MODEL_OUTLOOK) -> int:
        return min(self.k, budget - 1, outlook.most)

    def observe(self, k: int, accepted: int) -> None:
        if k:
            self.k = min(self.k_max, self.k + 2) if accepted == k else max(1, self.k - 1)


class CostModel:
    """The draft length with the most expected tokens per second (`best_k`), from calibrated
    round times and running acceptance estimates, one per kind of proposal (`Outlook.key`:
    a draft model's proposals are all alike, prompt lookup's differ by match length). When
    plain decoding wins, single k = 1 rounds (probes) keep an estimate fresh, spaced in plain
    steps (counted across requests that share it) so that probing costs at most `explore`
    of the decoding time."""

    def __init__(self, timings: Timings, estimates: AcceptanceEstimate | dict[str, AcceptanceEstimate], k_max: int,
                 margin: float = MARGIN, explore: float = 0.01) -> None:
        self.timings, self.k_max = timings, k_max
        self.estimates = estimates if isinstance(estimates, dict) else {MODEL_OUTLOOK.key: estimates}
        self.margin, self.explore = margin, explore
        self.key, self.prior = MODEL_OUTLOOK.key, MODEL_OUTLOOK.prior

    @property
    def estimate(self) -> AcceptanceEstimate:
        """The estimate for the kind of proposal the last `next_k` was asked about (from the
        outlook's prior when that kind is new)."""
        if self.key not in self.estimates:
            self.estimates[self.key] = AcceptanceEstimate(prior=self.prior)
        return self.estimates[self.key]

    def next_k(self, budget: int, outlook: Outlook = MODEL_OUTLOOK) -> int:
        self.key, self.prior = outlook.key, outlook.prior
        limit = min(self.k_max, budget - 1, outlook.most)
        if limit <= 0:
            return 0
        k = best_k(self.estimate.per_position(limit), self.timings, limit, self.margin)
        if k == 0 and self.estimate.plain_steps >= self.probe_interval() and self.may_pay(limit):
            return 1
        return k

    def may_pay(self, limit: int) -> bool:
        """Whether drafting could pay at all: never probe when even perfect acceptance loses."""
        return best_k(1.0, self.timings, limit, self.margin) > 0

    def plain_steps(self, budget: int) -> int:
        if not self.may_pay(min(self.k_max, budget - 1)):
            return budget
        return max(1, min(budget, self.probe_interval() - self.estimate.plain_steps))

    def probe_interval(self) -> int:
        """Plain steps between probes. A probe loses t_round(1) - (1 + alpha) t_plain against
        plain steps making as many tokens (with `best_k`'s margin); a useless draft is probed
        rarely, one close to paying often, which is when a noisy estimate most needs the
        fresh evidence."""
        t, alpha = self.timings, self.estimate.per_position(1)[0]
        loss = max(t.round(1) - (1 + alpha) * t.round(0) / (1 + self.margin), 0.0)
        return max(1, min(512, math.ceil(loss / (self.explore * t.round(0)))))

    def observe(self, k: int, accepted: int) -> None:
        self.estimate.update(accepted, k)
