"""Several choices for one request (OpenAI's `n`): n rows of one batch that share the prompt's
prefill and differ only in their random streams. The prompt is prefilled once; every row
starts from that cache and draws its first token from the same logits (`Batch.add`).

Choice i of a seeded request draws from `choice_seed(seed, i)`: choice 0 from the seed
itself (so it is the answer the same request gets with n = 1), the others from seeds derived
from (seed, i), so a seeded request with n choices is reproducible. (Speculating, both hold
where the draft lengths do not depend on the batch: a fixed draft length, not the cost
policy, which picks them from step times measured as the batch runs.) Greedy choices are
all equal. Only choice 0 returns its cache to the prompt cache (the others would crowd it with
the same prompt).
"""

from __future__ import annotations

import hashlib

from ..errors import InputError, InputTypeError
from ..validate import is_int
from .sampling import SEED_RANGE

MAX_CHOICES = 16  # choices per request: each is a batch row (its own cache after the prompt)


def check_choices(n: object) -> int:
    """`n` as the number of choices, 1..MAX_CHOICES; `InputError` otherwise."""
    if not is_int(n):
        raise InputTypeError(f"n must be an integer in 1..{MAX_CHOICES}, got {n!r}")
    if not 1 <= n <= MAX_CHOICES:
        raise InputError(f"n must be an integer in 1..{MAX_CHOICES}, got {n}")
    return int(n)


def choice_seed(seed: int | None, choice: int) -> int | None:
    """The seed choice `choice` of a request seeded `seed` draws from: the seed itself for
    choice 0, else one derived from (seed, choice); None (a random stream) stays None."""
    if seed is None or choice == 0:
        return seed
    digest = hashlib.sha256(f"mlxspec-choice:{seed}:{choice}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % SEED_RANGE
