"""mlxspec: speculative decoding for Mistral-class models on MLX.

    import mlxspec
    model, tokenizer = mlxspec.load("path/or/hf-repo-id")
    print(mlxspec.generate(model, tokenizer, "Hello", max_tokens=32))

    session = mlxspec.Session(model, tokenizer, draft)      # what an app keeps between requests
    session = mlxspec.Session(model, tokenizer, "ngram")    # prompt lookup: no draft model
    for step in session.stream("Hello", max_tokens=32):
        print(step.text, end="")
    reply = session.chat([{"role": "user", "content": "Hi"}], stop=["\n\n"])   # the prompt cache keeps turns cheap
    options = mlxspec.GenerationOptions(temperature=0.7, top_p=0.9, max_tokens=64)  # one request type everywhere
    text = session.generate("Hello", options, seed=1)                          # its fields as keywords too
    done = session.batch_generate(["Hello", "Bonjour"], max_tokens=32)         # one batch, speculating inside it
    reply = session.chat(messages, tools=[{"type": "function", "function": {...}}])  # through the chat template
    content, calls = mlxspec.parse_tool_calls(reply)                           # Hermes/Qwen, Mistral or Llama calls
"""

from .convert.converter import convert  # a plain function; the subpackage stays importable as mlxspec.convert.*
from .distill import distill  # a function; the subpackage stays importable as mlxspec.distill.*
from .drafts import FeatureDraft, NGramDraft, OtherVocabularyDraft
from .engine import (Calibration, GenerationOptions, GenerationStats, GenerationStep, SamplingParams, Session, SpeculativeStats,
                     generate, stream_generate)
from .engine.batch import Completion
from .engine.logprobs import TokenLogprob
from .errors import (CheckpointError, ConfigError, ContextError, InputError, InputTypeError, MlxspecError,
                     OutputError, TokenizerError)
from .load import load, load_draft, load_pair
from .models import Model, ModelArgs
from .text import Tokenizer
from .tools import ToolCall, parse_tool_calls

__version__ = "0.1.0"

__all__ = [
    "Calibration", "CheckpointError", "Completion", "ConfigError", "ContextError", "distill", "FeatureDraft", "GenerationOptions", "GenerationStats", "GenerationStep", "NGramDraft",
    "OtherVocabularyDraft",
    "InputError", "InputTypeError", "MlxspecError", "Model", "ModelArgs", "OutputError", "SamplingParams", "Session",
    "SpeculativeStats", "TokenLogprob", "Tokenizer", "TokenizerError", "convert", "generate", "load", "load_draft", "load_pair",
    "stream_generate", "ToolCall", "parse_tool_calls",
]
