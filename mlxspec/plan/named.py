"""The models a command's options name (--model/--draft, --pair), read for a plan: the target's
shape, and the draft's (None for a draft made by name, such as prompt lookup, which holds no
weights and no cache)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..drafts import KINDS
from ..errors import InputError
from .device import DeviceLimit, named_device, this_device
from .projection import Projection, draft_acceptance, project
from .request import FitRequest
from .shape import ModelShape
from .sources import pair_names, read_model
from .verdict import Plan, make_plan


@dataclass(frozen=True)
class Named:
    """The target and draft as named (a draft kind's name kept as `draft_kind`)."""

    target: ModelShape
    draft: ModelShape | None
    draft_kind: str | None
    draft_folder: Path | None


def read_named(model: str | None, draft: str | None, pair: str | None) -> Named:
    """Read what --model/--draft or --pair name (configs and headers only)."""
    if pair is not None and (model is not None or draft is not None):
        raise InputError("give one of --model/--draft or --pair")
    if pair is not None:
        target_dir, draft_dir = pair_names(pair)
        return Named(read_model(target_dir), read_model(draft_dir), None, draft_dir)
    if model is None:
        raise InputError("missing MODEL (or --pair)")
    if draft is not None and KINDS.makes(draft):
        return Named(read_model(model), None, draft, None)
    shape = read_model(draft) if draft is not None else None
    folder = Path(draft).expanduser() if draft is not None and Path(draft).expanduser().is_dir() else None
    return Named(read_model(model), shape, None, folder)


def plan_named(named: Named, request: FitRequest, device: str | None = None) -> Plan:
    """The plan of `named` under `request` on a chip of the table (`NAME[:GB]`) or this machine."""
    limit: DeviceLimit = named_device(device) if device is not None else this_device()
    return make_plan(named.target, named.draft, request, limit)


def projection(plan: Plan, named: Named, acceptance: float | None = None) -> Projection | None:
    """Projected tok/s on the plan's chip; None when the device is not a chip of the table."""
    chip = plan.device.chip
    if chip is None:
        return None
    if named.draft is not None:
        rate = draft_acceptance(named.draft_folder, acceptance)
        return project(chip.bandwidth, plan.target_fp.read_per_token, plan.draft_fp.read_per_token, rate)
    if named.draft_kind is not None and acceptance is not None:  # a kind by name (lookup) reads no weights
        return project(chip.bandwidth, plan.target_fp.read_per_token, 0, draft_acceptance(None, acceptance))
    return project(chip.bandwidth, plan.target_fp.read_per_token, None, None)
