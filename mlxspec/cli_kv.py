"""`--kv-bits` and `--kv-group-size`, the key/value cache options that generate, chat, serve
and bench share: defined once here, checked before anything loads (one `error:` line for a
value no cache can take), and handed to the command as one `kv` dict of `kv_bits` and
`kv_group_size`, the keywords `Session` takes."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional

import typer

from .models.kv_quantization import BITS, DEFAULT_GROUP_SIZE, GROUP_SIZES, check_values

KV_BITS_HELP = (f"Quantize the key/value caches (the target's and the draft's) to {' or '.join(map(str, BITS))} bits "
                "per element, as mlx-lm's --kv-bits: about 0.28 of the memory at 4 bits; they still roll back "
                "(default: full precision).")
KV_GROUP_SIZE_HELP = (f"With --kv-bits: elements of a key/value vector per scale, "
                      f"{', '.join(map(str, GROUP_SIZES))} (must divide the models' head_dim).")


def with_kv_options(command: Callable) -> Callable:
    """Give a command `--kv-bits` and `--kv-group-size`; it receives them, checked, as its
    `kv` parameter: `{"kv_bits": ..., "kv_group_size": ...}`."""
    signature = inspect.signature(command)
    own = [p for name, p in signature.parameters.items() if name != "kv"]
    added = [
        inspect.Parameter("kv_bits", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                          default=typer.Option(None, "--kv-bits", help=KV_BITS_HELP)),
        inspect.Parameter("kv_group_size", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                          default=typer.Option(DEFAULT_GROUP_SIZE, "--kv-group-size", help=KV_GROUP_SIZE_HELP)),
    ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        kv = {"kv_bits": kwargs.pop("kv_bits"), "kv_group_size": kwargs.pop("kv_group_size")}
        check_values(*kv.values(), names=("--kv-bits", "--kv-group-size"))  # before anything loads
        return command(kv=kv, **kwargs)

    run.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    run.__annotations__ = {**{k: v for k, v in command.__annotations__.items() if k != "kv"},
                           "kv_bits": Optional[int], "kv_group_size": int}
    return run
