"""The models: `ModelArgs`, the blocks every architecture family runs (`families`), RoPE and the
rolling KV cache. No I/O, no device choice and no timing here."""

from .cache import KVCache, RollingKVCache
from .config import ModelArgs
from .fingerprint import fingerprint
from .linear import Linear, set_weight_first_rows
from .mistral import Cache, Model, SubsetHead, TransformerBlock

__all__ = ["Cache", "KVCache", "Linear", "Model", "ModelArgs", "RollingKVCache", "SubsetHead", "TransformerBlock",
           "fingerprint", "set_weight_first_rows"]
