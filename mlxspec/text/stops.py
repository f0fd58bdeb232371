"""Stop strings: generation ends where the text first contains one of them, matched on the
text itself (across token boundaries: a stop string may end in the middle of a token or
span several), and the stop string is never emitted. Text that could still be the start
of a stop string is held back until it cannot."""

from __future__ import annotations

from typing import Sequence

from ..errors import InputError, InputTypeError
from .unicode import check_text

MAX_STOPS = 16  # as llama.cpp and OpenAI's API (4) bound them: each one is searched every token


def check_stops(stop: object) -> list[str]:
    """Stop strings as a list: None, one string or a list of non-empty strings."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise InputTypeError(f"stop must be a string or a list of strings, got {stop!r}")
    if any(not s for s in stops):
        raise InputError("a stop string is empty")
    for s in stops:  # lone surrogates (undecodable bytes of an argument) could never be generated
        check_text(s, "a stop string")
    if len(stops) > MAX_STOPS:
        raise InputError(f"at most {MAX_STOPS} stop strings, got {len(stops)}")
    return list(stops)


class StopMatcher:
    """Feed text deltas; get back what may be shown and whether a stop string was reached."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self._held = ""
        self.stopped = False

    def add(self, delta: str) -> str:
        """The text that is now safe to emit (stop strings and what follows are cut)."""
        if not self.stops or self.stopped:
            return "" if self.stopped else delta
        text = self._held + delta
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[: min(hits)]
        keep = max((self._partial(text, s) for s in self.stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    @staticmethod
    def _partial(text: str, stop: str) -> int:
        """The length of the longest end of `text` that begins `stop`."""
        for n in range(min(len(text), len(stop) - 1), 0, -1):
            if stop.startswith(text[-n:]):
                return n
        return 0

    def flush(self) -> str:
        """At the end of generation: what was held back (it never completed a stop string)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
