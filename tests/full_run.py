"""The default run and the full run of the suite.

`make test` (plain `pytest`) is the default run: every test function runs, but the heaviest
parametrizations run a fixed, named sample, the fuzz tests draw a quarter of their examples
(hypothesis is derandomized: the same examples every run) and the costliest chi-square
check half its seeded runs (its broken variant still fails by a wide margin). The full run
(`make test FULL=1`, `pytest --full` or MLXSPEC_FULL_TESTS=1) runs every parametrization,
example and run; CI runs it on every change, so every check runs at least once per change.

A parametrization left to the full run is written `full_only(...)` in its test's
`parametrize` list; the sample kept in the default run is chosen so that every oracle
(transformers, mlx-lm, GGUF/llama.cpp's recorded ids) and every sampling check's broken
variant still run there."""

from __future__ import annotations

import os

import pytest

ENV = "MLXSPEC_FULL_TESTS"
MARK = "full"


def is_full() -> bool:
    """Whether this is the full run (pytest --full sets the variable, for subprocesses too)."""
    return os.environ.get(ENV, "") not in ("", "0")


def fewer(count: int, by: int) -> int:
    """`count` draws (fuzz examples, seeded runs) in the full run, `count // by` by default."""
    return count if is_full() else max(1, count // by)


def full_only(*values, **options):
    """One parametrization that only the full run takes: `pytest.param` with the `full` mark."""
    return pytest.param(*values, marks=getattr(pytest.mark, MARK), **options)


def deselect_heavy(config, items: list) -> None:
    """Drop the `full`-marked parametrizations from the default run (reported as deselected)."""
    if is_full():
        return
    dropped = [item for item in items if item.get_closest_marker(MARK)]
    if dropped:
        items[:] = [item for item in items if not item.get_closest_marker(MARK)]
        config.hook.pytest_deselected(items=dropped)


def sample(names, *kept: str) -> list:
    """`names` as parametrizations: those `kept` run by default, the others in the full run."""
    assert set(kept) <= set(names), kept
    return [name if name in kept else full_only(name) for name in names]
