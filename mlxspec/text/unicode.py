"""Text mlxspec accepts: valid Unicode that encodes to UTF-8. Bytes that are not UTF-8 (in
a prompt argument, on standard input, in a prompts file) are refused with one line saying
where, never replaced silently: a model given mangled text would answer something else."""

from __future__ import annotations

from ..errors import InputError


def check_text(text: str, what: str) -> str:
    """`text` itself, or `InputError` when it holds characters UTF-8 cannot encode (lone
    surrogates: what Python makes of undecodable bytes in command-line arguments)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        byte = f" (the byte 0x{code - 0xDC00:02x}, which is not UTF-8)" if 0xDC80 <= code <= 0xDCFF else ""
        raise InputError(f"{what} is not valid UTF-8 text: character {exc.start} is U+{code:04X}{byte}") from None
    return text


def decode_utf8(data: bytes, what: str) -> str:
    """`data` decoded as UTF-8 (a leading byte-order mark dropped), or `InputError` naming the
    first bad byte, its offset and its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{what} is not valid UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                         f"(line {line})") from None
