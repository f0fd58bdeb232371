"""The tokenizer stored in a GGUF file's metadata, rebuilt as HF `tokenizer.json` files.

Two kinds occur in Llama/Mistral-family files (`tokenizer.ggml.model`):
- "gpt2": byte-level BPE (tokens + merges), with a pre-tokenizer regex named by
  `tokenizer.ggml.pre` (SmolLM2, Llama 3, ...);
- "llama": SentencePiece BPE (tokens + scores, `<0xNN>` byte pieces), as in Llama 2 and
  Mistral; the merges are recovered from the scores as transformers does.
Control tokens (type 3) become special tokens, user-defined ones (type 4) added tokens.
The `tokenizers` library (a dependency of transformers, hence of mlx-lm) builds the file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlxspec.errors import TokenizerError

if TYPE_CHECKING:
    from .gguf import GGUFFile

CONTROL, USER_DEFINED, BYTE = 3, 4, 6

# llama.cpp pre-tokenizer names -> split regexes applied before byte-level encoding.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_PRE_TOKENIZERS = {"default": "gpt2", "gpt2": "gpt2", "smollm": "smollm", "llama-bpe": "llama3", "llama3": "llama3"}


def tokenizer_files_from_gguf(gguf: "GGUFFile") -> dict[str, str]:
    """{"tokenizer.json": ..., "tokenizer_config.json": ...} built from the metadata."""
    kind = gguf.get("tokenizer.ggml.model")
    tokens = gguf.get("tokenizer.ggml.tokens")
    if kind is None or not tokens:
        raise TokenizerError(f"{gguf.path}: no tokenizer in the GGUF metadata")
    types = gguf.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(gguf, tokens)
    elif kind == "llama":
        tokenizer = _sentencepiece_bpe(gguf, tokens, types)
    else:
        raise TokenizerError(f"{gguf.path}: unsupported GGUF tokenizer model {kind!r} (supported: gpt2, llama)")
    _add_special_tokens(tokenizer, tokens, types)
    specials = _special_tokens(gguf, tokens)
    add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    if add_bos and "bos_token" in specials:
        from tokenizers import processors

        bos = specials["bos_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))]
        )
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": bool(gguf.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(gguf.get(f"{gguf.get('general.architecture')}.context_length", 2048)),
        **specials,
    }
    template = gguf.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    return {"tokenizer.json": tokenizer.to_str(), "tokenizer_config.json": json.dumps(config, indent=2)}


def _byte_level_bpe(gguf: "GGUFFile", tokens: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = gguf.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise TokenizerError(
            f"{gguf.path}: unsupported pre-tokenizer {pre!r} (supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
        )
    merges = [tuple(m.split(" ", 1)) for m in gguf.get("tokenizer.ggml.merges") or []]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    style = _PRE_TOKENIZERS[pre]
    regex = _LLAMA3_REGEX if style == "llama3" else _GPT2_REGEX
    steps = [pre_tokenizers.Split(Regex(regex), behavior="isolated"), byte_level]
    if style == "smollm":  # digits one by one, then GPT-2's split
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(gguf: "GGUFFile", tokens: list[str], types: list[int]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = gguf.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))]
    vocab = {token: i for i, token in enumerate(tokens)}
    # A merge (a, b) exists for every normal piece a+b splittable into two pieces; earlier
    # (higher-scoring) results merge first, as in SentencePiece's BPE.
    merges = []
    for piece, index in vocab.items():
        if types[index] != 1 or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((scores[index], vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    unk_id = int(gguf.get("tokenizer.ggml.unknown_token_id", 0))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges],
                                     unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True))
    steps = [normalizers.Replace(" ", "\u2581")]
    if gguf.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    strip = [decoders.Strip(" ", 1, 0)] if gguf.get("tokenizer.ggml.add_space_prefix", True) else []
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    return tokenizer


def _add_special_tokens(tokenizer: Any, tokens: list[str], types: list[int]) -> None:
    from tokenizers import AddedToken

    control = [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t == CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False) for i, t in enumerate(types) if t == USER_DEFINED]
    tokenizer.add_special_tokens(control)
    if user:
        tokenizer.add_tokens(user)


def _special_tokens(gguf: "GGUFFile", tokens: list[str]) -> dict[str, str]:
    specials = {}
    for role in ("bos", "eos", "unknown", "padding"):
        index = gguf.get(f"tokenizer.ggml.{role}_token_id")
        if index is not None and 0 <= int(index) < len(tokens):
            name = {"unknown": "unk", "padding": "pad"}.get(role, role)
            specials[f"{name}_token"] = tokens[int(index)]
    return specials
