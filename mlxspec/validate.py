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


def int_text(text: str) -> int | None:
    """The integer `text` spells in ASCII digits (an optional sign, blanks around), or None:
    for anything else, including digits of other scripts ('²') and more digits than Python
    converts (over 4300), which `int()` would refuse with an error of its own."""
    body = text.strip()
    digits = body[1:] if body[:1] in "+-" else body
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 4000:
        return None
    return int(body)
