"""Rejection sampling (`engine/verify.py`) with a draft whose support names a token more than
once: the token's q is the sum of its entries, and the output follows p exactly."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlxspec.engine.verify import verify
from test_speculative import chi2_critical, chi2_stat


@pytest.mark.parametrize("broken", [False, True])
def test_twin_support_entries_add_up(broken):
    """A draft whose two entries propose the same token (a byte token and a piece that spell
    the same bytes) proposes it with their summed probability: the output is p exactly. The
    mistake to catch: each token's q taken as its larger entry (the twins not added up).
    p = [0.5, 0.3, 0.2]; the draft draws token 0 from two entries (0.3 + 0.3), 1 (0.3), 2 (0.1)."""
    p = np.array([[0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]], dtype=np.float32)
    support, q = mx.array([0, 0, 1, 2]), np.array([[0.3, 0.3, 0.3, 0.1]], dtype=np.float32)
    N = 60000
    rows = mx.random.categorical(mx.broadcast_to(mx.log(mx.array(q)), (N, 1, 4)), axis=-1, key=mx.random.key(3))
    drafts = support[rows]
    if broken:  # one entry per token, the larger of its twins
        support, q = mx.array([0, 1, 2]), np.array([[0.3, 0.3, 0.1]], dtype=np.float32)
    p_lp = mx.broadcast_to(mx.log(mx.array(p)), (N, 2, 3))
    q_lp = mx.broadcast_to(mx.log(mx.array(q)), (N, 1, q.shape[1]))
    n, nxt = verify(p_lp, q_lp, drafts, support=support, key=mx.random.key(4))
    first = np.where(np.array(n) > 0, np.array(drafts)[:, 0], np.array(nxt))
    stat, df = chi2_stat(np.bincount(first, minlength=3).astype(np.float64), p[0].astype(np.float64))
    assert (stat > chi2_critical(df)) == broken, (stat, np.bincount(first, minlength=3) / N)
