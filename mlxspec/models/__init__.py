"""The models: `ModelArgs`, the blocks every architecture family runs (`families`), RoPE and the
rolling KV cache. No I/O, no device choice and no timing here."""

from .cache import KVCache, LayerCaches, RollingKVCache, layer_caches
from .config import ModelArgs
from .fingerprint import fingerprint
from .kv_quantization import KVQuantization, kv_keyword, kv_quantization
from .linear import Linear, set_weight_first_rows
from .foreign import ForeignModel
from .mistral import Cache, Model, SubsetHead, TransformerBlock


def is_model(obj: object) -> bool:
    """Whether `obj` is a loaded model: one of the port's, or one mlx-lm runs."""
    return isinstance(obj, (Model, ForeignModel))


__all__ = ["Cache", "ForeignModel", "KVCache", "KVQuantization", "LayerCaches", "Linear", "Model", "ModelArgs", "RollingKVCache", "SubsetHead", "TransformerBlock",
           "fingerprint", "is_model", "kv_keyword", "kv_quantization", "layer_caches",
           "set_weight_first_rows"]
