"""How much memory a run may use: on a named chip, Metal's working-set limit for its memory
(`chips`); on this machine, Metal's own `max_recommended_working_set_size` when MLX runs on
Metal, else the physical memory (MLX's CPU backend allocates from it), and which of them it is."""

from __future__ import annotations

import os
from dataclasses import dataclass

import mlx.core as mx

from .chips import Chip, find_chip, parse_device, working_set


@dataclass(frozen=True)
class DeviceLimit:
    """The device planned for, its memory limit in bytes, what the limit is, and its chip
    (None when it is not one in the table, e.g. a Linux machine: then no speed projection)."""

    name: str
    limit: float
    source: str
    chip: Chip | None = None
    on_metal: bool = False


def named_device(spec: str) -> DeviceLimit:
    """A chip of the table with a memory size (`NAME[:GB]`)."""
    chip, memory = parse_device(spec)
    return DeviceLimit(f"{chip.name} {memory / 1e9:g} GB", working_set(memory),
                       "Metal's recommended working set for that memory", chip, True)


def this_device() -> DeviceLimit:
    """The machine this runs on (see the module docstring)."""
    if mx.metal.is_available():
        info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
        name = str(info.get("device_name", "Apple GPU"))
        try:
            chip = find_chip(name)
        except Exception:  # a chip not in the table: no projection, the limit still holds
            chip = None
        return DeviceLimit(name, float(info["max_recommended_working_set_size"]),
                           "Metal's max_recommended_working_set_size", chip, True)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return DeviceLimit(f"this machine ({mx.default_device()})", float(memory), "physical memory (MLX's CPU backend)")
