"""What counts as a number in mlxspec's checks of arguments and files: an integer is an
`int` (or numpy's), never a `bool`; a real number is an integer or a float, never a `bool`."""

from __future__ import annotations

import numbers


def is_int(value: object) -> bool:
    """An integer (Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number (int or float, Python's or numpy's), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
