"""`Family`: what one architecture family tells the rest of mlxspec, so that adding a family
is one module and one line in the registry (`families/__init__.py`), never a change to the
blocks' callers.

A family is a set of options on the one `Model` (biases, per-head q/k norms, a sliding window,
experts) plus the names and keys its checkpoints use: how its `config.json` reads into
`ModelArgs` fields, the keys it needs written back, and how llama.cpp's GGUF files of it
(`general.architecture`) read. Module names are the HF checkpoint names for every family, so
HF weights need no renaming; Mistral's reference names live in `families.mistral`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# A GGUF metadata reader: key(name, default, kind) -> `{arch}.{name}` checked positive (kind
# int or float); default KeyError: required.
GGUFKey = Callable[[str, Any, type], Any]


def _nothing(*_: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Family:
    """One architecture family (see the module docstring)."""

    model_type: str
    architecture: str  # the transformers class config.json names (`architectures`)
    # config.json -> the family's own ModelArgs fields (the shared ones: `families.common`)
    read_hf: Callable[[dict[str, Any]], dict[str, Any]]
    # the optional parts of the blocks the family has: attention_bias, qkv_bias, mlp_bias,
    # qk_norm, sliding_window, experts (`config_checks.check_options`)
    options: frozenset[str] = frozenset()
    # transformers' defaults, when a config.json leaves them out
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # args -> keys config.json needs beyond the ModelArgs fields (e.g. a null window)
    write_hf: Callable[[Any], dict[str, Any]] = _nothing
    gguf_architecture: str | None = None  # llama.cpp's `general.architecture` for it
    # True: llama.cpp stores q/k rows in interleaved RoPE pairs (LLaMA-style conversion);
    # False: in HF's rotate-half order (NEOX RoPE: Qwen)
    gguf_interleaved: bool = True
    # (metadata reader, tensor names) -> the family's own ModelArgs fields
    read_gguf: Callable[[GGUFKey, set[str]], dict[str, Any]] = _nothing
