"""A reply read as it is generated, split into text and tool calls (formats in `calls`).

Text streams through until a call's start marker; a tail that may be the start of a marker
(or whitespace just before one) is held back until the next text says, so half a marker
never goes out as text. From the marker on the call's text is held until its end marker
(or the reply's end), then parsed: a call, or, when it does not parse, the held text goes
out as text after all. A reply that opens the way a format's bare calls do (`BARE`: Llama's
"{", and Mistral's "[" for tokenizers whose `[TOOL_CALLS]` is a special token, which decoding
leaves out) is held whole: it is a call only if all of it parses as one. Whitespace around calls is dropped. The same reader
serves whole replies (`parse_tool_calls`), so both give the same calls and text."""

from __future__ import annotations

from typing import Union

from .calls import FORMATS, MARKERS, ToolCall, calls_in

Piece = Union[str, ToolCall]
BARE = {"llama": "{", "mistral": "["}  # how a reply of calls without a start marker opens


class ToolCallReader:
    """Feeds on a reply's text, piece by piece; gives back text and `ToolCall`s in order."""

    def __init__(self, fmt: str = "hermes") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"tool call format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.fmt, self.markers = fmt, MARKERS[fmt]
        self.held = ""  # text not given back yet
        self.in_call = False  # `held` is a call's text, after its start marker
        self.opening = fmt in BARE  # nothing but whitespace seen yet: a call without a marker may come
        self.called = False  # a call was given back: whitespace after it is dropped
        self.bare = False  # the call held began without a marker

    def feed(self, text: str) -> list[Piece]:
        """What `text` completes: text to give out and calls made."""
        self.held += text
        out: list[Piece] = []
        while True:
            if self.opening and not self._open():
                return out
            if self.in_call:
                if not self._close_call(out):
                    return out
            elif not self._find_start(out):
                return out

    def close(self) -> list[Piece]:
        """At the reply's end: whatever is still held (an unterminated call that parses is a call)."""
        out: list[Piece] = []
        if self.in_call:
            self._call(self.held, out, terminated=False)
        elif self.held and not (self.called and self.held.isspace()):
            out.append(self.held)
        self.held, self.in_call = "", False
        return out

    def _open(self) -> bool:
        """Calls without a marker: decide, from the first non-space character, whether they begin."""
        start, marker = self.held.lstrip(), self.markers.start
        if not start or (len(start) < len(marker) and marker.startswith(start)):
            return False
        self.opening = False
        if start.startswith(BARE[self.fmt]) and not start.startswith(marker):
            self.held, self.in_call, self.bare = start, True, True
        return True

    def _find_start(self, out: list[Piece]) -> bool:
        """Text up to a start marker goes out (True: a call began); else all but a possible marker tail."""
        start = self.markers.start
        if self.called:
            self.held = self.held.lstrip()
        at = self.held.find(start)
        if at >= 0:
            self._text(self.held[:at].rstrip(), out)
            self.held, self.in_call = self.held[at + len(start):], True
            return True
        keep = _marker_tail(self.held, start)
        self._text(self.held[:keep], out)
        self.held = self.held[keep:]
        return False

    def _close_call(self, out: list[Piece]) -> bool:
        """True when the call's end marker arrived (and the call went out)."""
        end = self.markers.end
        at = self.held.find(end) if end else -1
        if at < 0:
            return False
        body, self.held, self.in_call = self.held[:at], self.held[at + len(end):], False
        self._call(body, out, terminated=True)
        return True

    def _call(self, body: str, out: list[Piece], terminated: bool) -> None:
        calls = calls_in(body, self.fmt)
        if calls is not None:
            out.extend(calls)
            self.called = True
            return
        start = "" if self.bare else self.markers.start
        self._text(start + body + ((self.markers.end or "") if terminated else ""), out)

    def _text(self, text: str, out: list[Piece]) -> None:
        if text:
            out.append(text)


def _marker_tail(text: str, marker: str) -> int:
    """Where the part of `text` to hold back begins: its longest tail that begins `marker`,
    and the whitespace just before that tail (or the trailing whitespace when none)."""
    cut = len(text)
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            cut = len(text) - n
            break
    while cut > 0 and text[cut - 1].isspace():
        cut -= 1
    return cut


def parse_tool_calls(text: str, fmt: str = "hermes") -> tuple[str | None, list[ToolCall]]:
    """The tool calls in a model's whole reply `text`, written in format `fmt` ("hermes",
    "mistral" or "llama"; see `mlxspec.tools.calls`), and the reply's other text: None when
    there is none beside the calls. A call that does not parse stays in the text."""
    reader = ToolCallReader(fmt)
    pieces = reader.feed(text) + reader.close()
    calls = [p for p in pieces if isinstance(p, ToolCall)]
    content = "".join(p for p in pieces if isinstance(p, str))
    if calls:
        content = content.strip()
    return (content or None) if calls else content, calls
