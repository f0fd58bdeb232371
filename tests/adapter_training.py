"""Real adapter folders for the tests, written by mlx-lm's own trainer (`mlx_lm.lora.train_model`,
in process, a few iterations on a tiny token dataset) on a base checkpoint; and mlx-lm's
model with the same adapter (`load_adapters`), the oracle."""

from __future__ import annotations

import contextlib
import io
import types
from pathlib import Path

import mlx.core as mx
import numpy as np


class TokenDataset:
    """What mlx-lm's `CacheDataset` wraps: items, and `process` turning one into (tokens, offset)."""

    def __init__(self, rows: list[list[int]]) -> None:
        self.rows = rows

    def __getitem__(self, i: int) -> list[int]:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)

    def process(self, row: list[int]) -> tuple[list[int], int]:
        return row, 0


def train_adapter(base: Path, out: Path, fine_tune_type: str = "lora", num_layers: int = -1, iters: int = 4,
                  rank: int = 4, scale: float = 10.0, keys: list[str] | None = None, seed: int = 0) -> Path:
    """An adapter folder from mlx-lm's trainer on `base` (learning rate high enough that a few
    steps move the adapter visibly off its zero start)."""
    from mlx_lm.lora import CONFIG_DEFAULTS, train_model
    from mlx_lm.utils import load_model

    mx.random.seed(seed)  # the LoRA matrices start from MLX's global generator, and mlx-lm's
    np.random.seed(seed)  # batches are shuffled by numpy's: the same adapter in any test order
    model, _ = load_model(base)
    rng = np.random.default_rng(seed)
    rows = [list(map(int, rng.integers(3, 300, size=24))) for _ in range(8)]
    lora = {"rank": rank, "dropout": 0.0, "scale": scale, **({"keys": keys} if keys else {})}
    args = types.SimpleNamespace(**{**CONFIG_DEFAULTS, "fine_tune_type": fine_tune_type, "num_layers": num_layers,
                                    "iters": iters, "batch_size": 2, "val_batches": 1, "steps_per_eval": 1000,
                                    "steps_per_report": 1000, "save_every": 1000, "learning_rate": 2e-2,
                                    "adapter_path": str(out), "lora_parameters": lora, "seed": seed,
                                    "max_seq_length": 64, "train": True})
    with contextlib.redirect_stdout(io.StringIO()):
        train_model(args, model, TokenDataset(rows[:6]), TokenDataset(rows[6:]))
    return out


def mlx_lm_with_adapter(base: Path, adapter: Path | None, dequantize: bool = False):
    """mlx-lm's own model for `base` with `adapter` loaded its way (the oracle)."""
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import dequantize_model, load_model

    model, config = load_model(base)
    if dequantize and config.get("quantization"):
        model = dequantize_model(model)
    if adapter is not None:
        load_adapters(model, str(adapter))
    model.eval()
    return model
