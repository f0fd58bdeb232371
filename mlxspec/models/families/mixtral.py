"""Mixtral (Jiang et al. 2024): Mistral's blocks with a sparse mixture of SwiGLU experts as
the feed-forward (`models.moe`); not windowed unless its config says so. Its expert tensors
are stacked on loading (`layout.group_experts`); llama.cpp writes it as a `llama` GGUF with
an `expert_count` (`families.llama`), Mistral as `params.json` with a `moe` block."""

from __future__ import annotations

from typing import Any

from .family import Family


def _read_hf(config: dict[str, Any]) -> dict[str, Any]:
    return dict(num_local_experts=config.get("num_local_experts", config.get("num_experts", 8)),
                num_experts_per_tok=config.get("num_experts_per_tok", 2), sliding_window=config.get("sliding_window"))


FAMILY = Family(
    model_type="mixtral", architecture="MixtralForCausalLM", read_hf=_read_hf,
    options=frozenset({"sliding_window", "experts"}), rms_norm_eps=1e-5, rope_theta=1e6,
    write_hf=lambda args: {"sliding_window": args.sliding_window},  # null, not absent
)
