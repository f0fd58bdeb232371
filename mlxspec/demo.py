"""The embedded default behind `mlxspec demo`: a small Mistral-shaped checkpoint with
random weights and the real Mistral-7B tokenizer, written in HF layout, converted by
`mlxspec.convert` and loaded through the same path as a downloaded model. (A real
pretrained demo pair replaces it once one ships with mlxspec.)"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import ModelArgs
from .errors import MlxspecError

DEMO_ARGS = ModelArgs(
    hidden_size=256, num_hidden_layers=4, intermediate_size=768, num_attention_heads=8,
    num_key_value_heads=2, vocab_size=32000, sliding_window=64, max_position_embeddings=4096,
)
DEMO_PROMPT = "Explain speculative decoding in one paragraph."


def mistral_tokenizer_file() -> Path:
    """The Mistral-7B SentencePiece model shipped inside the `mistral-common` package."""
    try:
        data = resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    except ModuleNotFoundError:
        raise MlxspecError("the demo needs mistral-common: pip install 'mlxspec[demo]'") from None
    return Path(str(data))


def build_demo_checkpoint(workdir: Path, seed: int = 0) -> Path:
    """Write the demo checkpoint (HF layout) to `workdir/hf`, convert it to `workdir/mlx`
    (each step skipped when already done) and return the converted folder."""
    from .convert import convert
    from .convert.synthetic import write_random_hf_checkpoint

    hf, mlx = workdir / "hf", workdir / "mlx"
    if not (hf / "config.json").is_file():
        write_random_hf_checkpoint(hf, DEMO_ARGS, seed=seed, tokenizer_file=mistral_tokenizer_file())
    if not (mlx / "config.json").is_file():
        convert(hf, mlx, force=True)
    return mlx
