"""Apple chips a plan can be made for (`--device NAME[:GB]`): unified memory sizes sold, GPU
memory bandwidth (Apple's figures), and the working-set limit Metal recommends for a memory
size. The limit is what `mx.metal.device_info()["max_recommended_working_set_size"]` reports
on these machines: about two thirds of memory up to 36 GB, three quarters above (macOS keeps
the rest for itself)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

GB = 1e9


@dataclass(frozen=True)
class Chip:
    """One chip: its name, GPU bandwidth in GB/s, and the memory sizes (GB) it comes with."""

    name: str
    bandwidth: float
    memory: tuple[int, ...]


CHIPS = (
    Chip("M1", 68.25, (8, 16)), Chip("M1 Pro", 200, (16, 32)), Chip("M1 Max", 400, (32, 64)),
    Chip("M1 Ultra", 800, (64, 128)),
    Chip("M2", 100, (8, 16, 24)), Chip("M2 Pro", 200, (16, 32)), Chip("M2 Max", 400, (32, 64, 96)),
    Chip("M2 Ultra", 800, (64, 128, 192)),
    Chip("M3", 100, (8, 16, 24)), Chip("M3 Pro", 150, (18, 36)), Chip("M3 Max", 400, (36, 48, 64, 96, 128)),
    Chip("M3 Ultra", 819, (96, 256, 512)),
    Chip("M4", 120, (16, 24, 32)), Chip("M4 Pro", 273, (24, 48, 64)), Chip("M4 Max", 546, (36, 48, 64, 128)),
)


def working_set(memory_bytes: float) -> float:
    """Metal's recommended working-set limit for a machine of this much unified memory."""
    return memory_bytes * (2 / 3 if memory_bytes <= 36 * GB else 0.75)


def find_chip(name: str) -> Chip:
    """The chip a name means ('M2 Max', 'm2max', 'Apple M2 Max'); `InputError` naming the table."""
    key = name.lower().replace("apple", "").replace(" ", "").replace("-", "")
    for chip in CHIPS:
        if chip.name.lower().replace(" ", "") == key:
            return chip
    raise InputError(f"unknown chip {name!r} (known: {', '.join(c.name for c in CHIPS)})")


def parse_device(spec: str) -> tuple[Chip, float]:
    """`NAME[:GB]` as (chip, memory in bytes); without GB the largest size the chip comes with."""
    name, _, size = spec.partition(":")
    chip = find_chip(name.strip())
    if not size:
        return chip, max(chip.memory) * GB
    try:
        memory = float(size)
    except ValueError:
        raise InputError(f"--device {spec!r}: the memory after ':' must be a number of GB") from None
    if memory not in chip.memory:
        raise InputError(f"--device {spec!r}: the {chip.name} comes with {', '.join(map(str, chip.memory))} GB")
    return chip, memory * GB
