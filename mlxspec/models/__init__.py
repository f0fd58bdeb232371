"""The models: `ModelArgs`, the Mistral/Llama blocks and the rolling KV cache.
No I/O, no device choice and no timing here."""

from .cache import KVCache, LayerCaches, RollingKVCache, layer_caches
from .config import ModelArgs
from .fingerprint import fingerprint
from .linear import Linear, set_weight_first_rows
from .mistral import Cache, Model, SubsetHead, TransformerBlock

__all__ = ["Cache", "KVCache", "LayerCaches", "Linear", "Model", "ModelArgs", "RollingKVCache", "SubsetHead", "TransformerBlock",
           "fingerprint", "layer_caches", "set_weight_first_rows"]
