"""The fit check that `generate`, `chat`, `serve`, `bench` and `distill` run before loading: the
plan of what their options name, from configs and headers alone, and one line refusing the run
when it does not fit (what, by how much, what to change). A model named by Hub id whose metadata
cannot be read is left to loading, which reports on it itself."""

from __future__ import annotations

from dataclasses import replace

from ..adapters import read_adapter
from ..errors import ConfigError, FitError
from ..hub import is_repo_id
from ..paths import user_path
from ..selection import named_models
from .named import plan_named, read_named
from .request import FitRequest
from .verdict import GB, Plan


def _on_hub(name: str | None) -> bool:
    return name is not None and not user_path(name).exists() and is_repo_id(name)


def check_fit(model: str | None, draft: str | None, pair: str | None, request: FitRequest,
              skip: bool = False, how: str = "", adapter: str | None = None) -> Plan | None:
    """Raise `FitError` when the run does not fit this device; the plan, or None when skipped.
    `how` says how the command chose the context (it ends the line's parenthesis). An
    `adapter` folder is checked first, fit check or not (it is small; a damaged one is one line
    before any model is read)."""
    if adapter is not None:
        read_adapter(adapter)
    if skip:
        return None
    target, drafted = named_models(model, draft, pair, False)  # the command's own words for bad options
    try:
        named = read_named(str(target), None if drafted is None else str(drafted), None)
    except ConfigError:
        if _on_hub(model) or _on_hub(draft):
            return None
        raise
    if request.context is not None and named.target.context is not None:  # longer is refused by the command itself
        request = replace(request, context=min(request.context, named.target.context))
    plan = plan_named(named, request)
    if not plan.fits:
        raise FitError(refusal(plan, how))
    return plan


def refusal(plan: Plan, how: str = "") -> str:
    """The one line saying what does not fit, by how much, and what to change."""
    what = plan.target.name + (f" with draft {plan.draft.name}" if plan.draft is not None else "")
    rows = f" x {plan.request.batch} rows" if plan.request.batch > 1 else ""
    weights = "float32 weights" if plan.request.dequantize else "weights as stored"
    tips = "; ".join(plan.advice[:3]) or "a smaller model"
    return (f"{what} does not fit: needs {plan.total / GB:.2f} GB ({plan.tokens} tokens{rows}, {weights}{how}), "
            f"the device allows {plan.device.limit / GB:.2f} GB ({plan.device.source}); try {tips}; "
            "--no-fit-check to run anyway")
