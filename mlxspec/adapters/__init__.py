"""mlx-lm LoRA/DoRA/full fine-tune adapters: read and checked (`folder`), applied to a loaded
model (`apply`), the modules they adapt and mlx-lm's layers around them (`layers`)."""

from .apply import apply_adapter
from .folder import Adapter, read_adapter

__all__ = ["Adapter", "apply_adapter", "read_adapter"]
