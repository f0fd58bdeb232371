"""The architecture families the port runs, found by `model_type` (config.json) or by
llama.cpp's `general.architecture` (GGUF). A new family is one module here and one entry
below; the blocks, the loader, the converter and the engine stay as they are."""

from __future__ import annotations

from ...errors import UnsupportedModelError
from . import llama, mistral, mixtral, qwen2, qwen3
from .family import Family, GGUFKey

FAMILIES = {f.model_type: f for f in (mistral.FAMILY, llama.FAMILY, mixtral.FAMILY, qwen2.FAMILY, qwen3.FAMILY)}
GGUF_ARCHITECTURES = {f.gguf_architecture: f for f in FAMILIES.values() if f.gguf_architecture}


def family(model_type: object) -> Family:
    """The family of `model_type`; `UnsupportedModelError` naming the supported ones."""
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise UnsupportedModelError(f"unsupported architecture {model_type!r} (supported: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "GGUF_ARCHITECTURES", "Family", "GGUFKey", "family"]
