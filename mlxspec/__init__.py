"""mlxspec: speculative decoding for Mistral-class models on MLX.

    import mlxspec
    model, tokenizer = mlxspec.load("path/or/hf-repo-id")
    print(mlxspec.generate(model, tokenizer, "Hello", max_tokens=32))
"""

from .config import ModelArgs
from . import convert  # callable: mlxspec.convert(src, out, bits=..., group_size=...)
from .errors import CheckpointError, ConfigError, InputError, MlxspecError, TokenizerError
from .generate import generate, stream_generate
from .feature_draft import FeatureDraft
from .load import load, load_draft, load_pair
from .model import Model
from .stats import GenerationStats, GenerationStep
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "GenerationStats", "GenerationStep", "InputError",
    "FeatureDraft", "MlxspecError", "Model", "ModelArgs", "Tokenizer", "TokenizerError",
    "convert", "generate", "load", "load_draft", "load_pair", "stream_generate",
]
