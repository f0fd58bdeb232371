"""RoPE scaling: the frequencies of each scaled rotary embedding, computed as transformers'
`modeling_rope_utils` computes them, and the checks of a `rope_scaling` dictionary.

A scaling is a dictionary `{"rope_type": ..., <its numbers>}` (`ModelArgs.rope_scaling`; None:
plain RoPE, theta^(-2i/d)). What each type does to the inverse frequencies inv_i = theta^(-2i/d):

- `linear` (position interpolation): inv_i / factor.
- `dynamic` (NTK-aware): theta grows with the sequence length; see `dynamic_exponents` and
  `mlxspec.models.rope`.
- `llama3` (Llama 3.1): long wavelengths (> original context / low_freq_factor) divided by
  factor, short ones (< original context / high_freq_factor) kept, a smooth blend between.
- `yarn` (Peng et al. 2023): a ramp between interpolated and original frequencies over the
  dimensions, and an attention factor multiplying queries and keys.
- `longrope` with equal short and long factors: inv_i / factor_i for fixed per-dimension
  factors (what a GGUF `rope_freqs` tensor holds). Different short and long factors switch
  with the sequence length, which a rolled-back cache cannot follow: refused.
No I/O here; numbers in float32, as transformers computes them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError, UnsupportedModelError
from ..validate import is_real

SCALINGS = ("linear", "dynamic", "llama3", "yarn", "longrope")
_REQUIRED = {"linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor", "original_max_position_embeddings"),
             "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
             "longrope": ("short_factor", "long_factor")}
_OPTIONAL = {"yarn": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"),
             "longrope": ("factor", "attention_factor", "original_max_position_embeddings")}


def check_scaling(scaling: Any, head_dim: int, max_positions: int | None) -> None:
    """A `rope_scaling` dictionary of a supported type, with every number it needs, positive
    and finite (`UnsupportedModelError` for a type the port does not implement)."""
    if scaling is None:
        return
    if not isinstance(scaling, dict):
        raise ConfigError(f"rope_scaling must be an object, got {scaling!r}")
    kind = scaling.get("rope_type")
    if kind not in SCALINGS:
        raise UnsupportedModelError(f"unsupported RoPE scaling {kind!r} (supported: default, {', '.join(SCALINGS)})")
    for key in _REQUIRED[kind] + _OPTIONAL.get(kind, ()):
        value = scaling.get(key)
        if key in ("short_factor", "long_factor"):
            if not isinstance(value, list) or len(value) != head_dim // 2 or not all(map(_positive, value)):
                raise ConfigError(f"rope_scaling {key} must be a list of {head_dim // 2} positive numbers")
        elif (value is not None or key in _REQUIRED[kind]) and not (_positive(value) or (
                key in ("mscale", "mscale_all_dim") and value == 0)):
            raise ConfigError(f"rope_scaling {key} must be a finite number > 0 for {kind} RoPE, got {value!r}")
    if kind == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ConfigError("rope_scaling high_freq_factor must be greater than low_freq_factor (llama3 RoPE)")
    if kind == "longrope" and scaling["short_factor"] != scaling["long_factor"]:
        raise UnsupportedModelError("longrope with different short and long factors switches frequencies with the "
                                    "sequence length; not supported")
    if kind == "dynamic" and (max_positions is None or head_dim <= 2):
        raise ConfigError("dynamic RoPE scaling needs max_position_embeddings and a head_dim above 2")
    if not isinstance(scaling.get("truncate", True), bool):
        raise ConfigError(f"rope_scaling truncate must be true or false, got {scaling['truncate']!r}")


def _positive(value: Any) -> bool:
    return is_real(value) and math.isfinite(value) and value > 0


def inverse_frequencies(theta: float, dims: int, scaling: dict[str, Any] | None) -> np.ndarray:
    """inv_i, i < dims/2, for a static scaling (all but `dynamic`, whose frequencies move)."""
    inv = (1.0 / theta ** (np.arange(0, dims, 2, dtype=np.int64).astype(np.float32) / dims)).astype(np.float32)
    kind = None if scaling is None else scaling["rope_type"]
    if kind == "linear":
        return inv / np.float32(scaling["factor"])
    if kind == "llama3":
        return _llama3(inv, scaling)
    if kind == "yarn":
        return _yarn(theta, dims, scaling)
    if kind == "longrope":
        return (inv / np.array(scaling["long_factor"], np.float32)).astype(np.float32)
    return inv


def _llama3(inv: np.ndarray, s: dict[str, Any]) -> np.ndarray:
    """Llama 3.1's frequencies (transformers' `_compute_llama3_parameters`)."""
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) & ~(wavelen > old / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(theta: float, dims: int, s: dict[str, Any]) -> np.ndarray:
    """YaRN's frequencies (transformers' `_compute_yarn_parameters`)."""
    factor, original = s["factor"], s["original_max_position_embeddings"]
    fast, slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return dims * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(fast), correction_dim(slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dims - 1)
    if low == high:
        high += 0.001  # as transformers does, against a division by zero
    ramp = np.clip((np.arange(dims // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    pos = (theta ** (np.arange(0, dims, 2).astype(np.float32) / dims)).astype(np.float32)
    return ((1.0 / (factor * pos)) * (1 - extrapolation) + (1.0 / pos) * extrapolation).astype(np.float32)


def attention_factor(scaling: dict[str, Any] | None) -> float:
    """What queries and keys are multiplied by after the rotation (transformers scales cos and
    sin by it): YaRN's sqrt of the softmax temperature, LongRoPE's; 1 for the others."""
    kind = None if scaling is None else scaling["rope_type"]
    if kind not in ("yarn", "longrope"):
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    original = scaling.get("original_max_position_embeddings")
    factor = scaling.get("factor") or 1.0
    if kind == "longrope":
        return 1.0 if factor <= 1 or original is None else math.sqrt(1 + math.log(factor) / math.log(original))
    mscale, mscale_all_dim = scaling.get("mscale"), scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim))
    return _yarn_mscale(factor, 1)


def _yarn_mscale(scale: float, mscale: float) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def dynamic_exponents(dims: int) -> np.ndarray:
    """For dynamic NTK scaling: theta' = theta * r^(d/(d-2)) gives inv'_i = inv_i * r^(-2i/(d-2));
    these are the exponents -2i/(d-2)."""
    return (-np.arange(0, dims, 2, dtype=np.float32) / (dims - 2)).astype(np.float32)
