"""The request options every generating command shares, made from `GenerationOptions`' own
fields: one flag per field (its help and spellings come from the field), the values turned
into one checked `GenerationOptions` before the command runs. A command names the fields
that make no sense for it and its own defaults; a new option needs no edit here."""

from __future__ import annotations

import functools
import inspect
from dataclasses import fields
from typing import Any, Callable, List, Optional

import typer

from .engine.options import GenerationOptions, option_default


def _cli_type(annotation: str) -> tuple[Any, bool]:
    """(the type typer parses a field's flag as, whether the value is optional) for a field
    annotation: ints, floats, optional ints, a list of strings (repeated flag) or text."""
    kinds = {"int": (int, False), "float": (float, False), "int | None": (Optional[int], True),
             "tuple[str, ...]": (Optional[List[str]], True)}
    return kinds.get(annotation, (Optional[str], True))


def _flags(name: str, declared: tuple[str, ...]) -> tuple[str, ...]:
    return declared or ("--" + name.replace("_", "-"),)


def _parameter(f: Any, default: Any) -> inspect.Parameter:
    kind, optional = _cli_type(str(f.type))
    shown = default if not (optional and default in ((), None)) else None
    option = typer.Option(shown, *_flags(f.name, f.metadata["flags"]), help=f.metadata["help"])
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)


def with_generation_options(exclude: tuple[str, ...] = (), **defaults: Any) -> Callable:
    """Give a command one flag per `GenerationOptions` field (but `exclude`), with this
    command's `defaults`; the command receives them as `options: GenerationOptions`."""
    chosen = [f for f in fields(GenerationOptions) if f.name not in exclude]
    unknown = set(defaults) - {f.name for f in chosen}
    assert not unknown, f"defaults for options the command lacks: {unknown}"

    def wrap(command: Callable) -> Callable:
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name != "options"]
        added = [_parameter(f, defaults.get(f.name, option_default(f.name))) for f in chosen]

        @functools.wraps(command)
        def run(**kwargs: Any) -> Any:
            given = {f.name: kwargs.pop(f.name) for f in chosen}
            values = {name: value for name, value in given.items() if value is not None}
            options = GenerationOptions().with_values({**defaults, **values})
            return command(options=options, **kwargs)

        run.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
        run.__annotations__ = {k: v for k, v in command.__annotations__.items() if k != "options"}
        run.__annotations__.update({p.name: p.annotation for p in added})
        return run

    return wrap
