"""The ring a rank is told to join, checked before MLX sees it.

`mlx.launch` (or whoever starts a rank by hand) sets MLX_HOSTFILE, the path of a JSON list
with one entry per rank, each the "IPv4:port" addresses that rank listens on (a list of
them, or one as a string), and MLX_RANK, this rank's index in it. MLX's ring backend
trusts both: an empty list kills the process (a division by zero, SIGFPE), a single host or
a negative rank waits forever, a duplicate address forms a ring with itself on one
machine. So `read_ring` refuses anything but a ring of two or more distinct ranks that MLX
can set up, with one line naming the file (or variable) and what is wrong, before any
rank starts anything.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from ..text.unicode import decode_utf8

MAX_BYTES = 1 << 20  # a hostfile of a thousand ranks is a few tens of KB
USAGE = ("--pipeline runs under mlx.launch, one process per rank: mlx.launch -n 2 --backend ring "
         "--python PYTHON -- -m mlxspec generate --pipeline ...")
_PORT = re.compile(r"[0-9]{1,5}")
_RANK = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Ring:
    """A checked ring: this process's rank and every rank's addresses, in rank order."""

    rank: int
    hosts: list[list[str]]


def read_ring(environ: Mapping[str, str]) -> Ring:
    """The ring that MLX_HOSTFILE and MLX_RANK in `environ` describe, or `InputError`."""
    path, rank = environ.get("MLX_HOSTFILE"), environ.get("MLX_RANK")
    if not path or rank is None:
        raise InputError(USAGE)
    where = f"the hostfile {path} (MLX_HOSTFILE)"
    hosts = parse_hosts(_load(Path(path), where), where)
    return Ring(parse_rank(rank, len(hosts), where), hosts)


def _load(path: Path, where: str) -> Any:
    """The hostfile's JSON value."""
    if path.exists() and not path.is_file():  # a folder, a pipe: reading it fails or never ends
        raise InputError(f"{where} is not a file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise InputError(f"{where} is over {MAX_BYTES} bytes: not a hostfile")
    text = decode_utf8(data, where)
    if not text.strip():  # what mlx.launch writes for a single rank
        raise InputError(f"{where} is empty: a pipeline needs two ranks or more (mlx.launch -n 2 ...)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError):  # over-long integers, deep nesting
        raise InputError(f"{where} is not a JSON list of hosts") from None


def parse_hosts(value: Any, where: str) -> list[list[str]]:
    """Every rank's addresses from the hostfile's JSON `value`: a list of two or more ranks,
    each one address or a non-empty list of them, as many for every rank, none twice."""
    if not isinstance(value, list):
        raise InputError(f'{where} must be a JSON list with one entry per rank (e.g. [["10.0.0.1:5000"], '
                         f'["10.0.0.2:5000"]]), got a JSON {_kind(value)}')
    if len(value) < 2:
        raise InputError(f"{where} lists {len(value)} rank{'' if len(value) == 1 else 's'}: a pipeline needs two "
                         "ranks or more")
    hosts = [_rank_addresses(entry, f"{where}, rank {rank}") for rank, entry in enumerate(value)]
    counts = sorted({len(h) for h in hosts})
    if len(counts) > 1:
        raise InputError(f"{where} gives the ranks different numbers of addresses ({counts}): MLX's ring needs as many "
                         "connections to the left of each rank as to its right")
    seen: dict[str, int] = {}
    for rank, addresses in enumerate(hosts):
        for address in addresses:
            if address in seen:
                raise InputError(f"{where} lists {address} for rank {seen[address]} and again for rank {rank}: every "
                                 "rank listens on addresses of its own")
            seen[address] = rank
    return hosts


def _rank_addresses(entry: Any, where: str) -> list[str]:
    """One rank's addresses: a string, or a non-empty list of strings, each checked."""
    addresses = [entry] if isinstance(entry, str) else entry
    if not isinstance(addresses, list) or not addresses:
        raise InputError(f'{where} must be a non-empty list of "IP:port" addresses, got {_show(entry)}')
    return [check_address(address, where) for address in addresses]


def check_address(address: Any, where: str) -> str:
    """`address` if it is "IPv4:port" (what MLX's ring can bind and connect to), else `InputError`."""
    if not isinstance(address, str):
        raise InputError(f'{where}: an address is an "IP:port" string, got {_show(address)}')
    host, colon, port = address.partition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise InputError(f'{where}: {address!r} is not "IPv4:port" (the ring backend needs IPv4 addresses, '
                         "not host names)") from None
    if not colon or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise InputError(f"{where}: {address!r} has no port in 1..65535 after the colon")
    return address


def parse_rank(text: str, ranks: int, where: str) -> int:
    """MLX_RANK as a rank of a ring of `ranks`."""
    if not _RANK.fullmatch(text) or int(text) >= ranks:
        raise InputError(f"MLX_RANK={text!r} is not a rank of {where}: it lists ranks 0..{ranks - 1}")
    return int(text)


def _kind(value: Any) -> str:
    """The JSON name of `value`'s type."""
    return {dict: "object", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """`value` for a message, cut short."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
