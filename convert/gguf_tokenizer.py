"""The tokenizer stored in a GGUF file's metadata, rebuilt as HF `tokenizer.json` files.

Two kinds occur in Llama/Mistral-family files (`tokenizer.ggml.model`):
- "gpt2": byte-level BPE (tokens + merges), with a pre-tokenizer regex named by
  `tokenizer.ggml.pre` (SmolLM2, Llama 3, Qwen2/Qwen3 (with HF's NFC normalizer), ...);
- "llama": SentencePiece BPE (tokens + scores, `<0xNN>` byte pieces), as in Llama 2 and
  Mistral; the merges are recovered from the scores as transformers does.
Control tokens (type 3) become special tokens, user-defined ones (type 4) added tokens.
The `tokenizers` library (a dependency of transformers, hence of mlx-lm) builds the file.
Every array and id is checked first (distinct string tokens, one type and score per
token, merges "left right", special ids inside the vocabulary), and what the library still
refuses becomes a `TokenizerError` naming the file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable

from mlxspec.errors import TokenizerError
from mlxspec.validate import is_int

if TYPE_CHECKING:
    from .gguf import GGUFFile

CONTROL, USER_DEFINED, BYTE = 3, 4, 6

# llama.cpp pre-tokenizer names -> split regexes applied before byte-level encoding.
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen2's: Llama 3's with digits one by one.
_QWEN2_REGEX = _LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
_PRE_TOKENIZERS = {"default": "gpt2", "gpt2": "gpt2", "smollm": "smollm", "llama-bpe": "llama3", "llama3": "llama3",
                   "qwen2": "qwen2"}
_REGEXES = {"llama3": _LLAMA3_REGEX, "qwen2": _QWEN2_REGEX}


def tokenizer_files_from_gguf(gguf: "GGUFFile") -> dict[str, str]:
    """{"tokenizer.json": ..., "tokenizer_config.json": ...} built from the metadata."""
    kind = gguf.get("tokenizer.ggml.model")
    if kind is None or not gguf.get("tokenizer.ggml.tokens"):
        raise TokenizerError(f"{gguf.path}: no tokenizer in the GGUF metadata")
    if kind not in ("gpt2", "llama"):
        raise TokenizerError(f"{gguf.path}: unsupported GGUF tokenizer model {_show(kind)} (supported: gpt2, llama)")
    tokens, types = _vocabulary(gguf)
    specials = _special_tokens(gguf, tokens)
    add_bos = bool(gguf.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    try:
        text = _build(gguf, kind, tokens, types, specials.get("bos_token") if add_bos else None)
    except TokenizerError:
        raise
    except Exception as exc:  # the library's own checks (a merge of unknown tokens, ...)
        why = " ".join(str(exc).split())[:200]  # one line, whatever the library says
        raise TokenizerError(f"{gguf.path}: the tokenizers library rejects this vocabulary ({why})") from None
    template = gguf.get("tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise TokenizerError(f"{gguf.path}: tokenizer.chat_template must be a string, got {_show(template)}")
    context = gguf.get(f"{gguf.get('general.architecture')}.context_length")
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": add_bos,
        "add_eos_token": bool(gguf.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": context if is_int(context) and context > 0 else 2048,
        **specials,
        **({"chat_template": template} if template else {}),
    }
    return {"tokenizer.json": text, "tokenizer_config.json": json.dumps(config, indent=2)}


def _build(gguf: "GGUFFile", kind: str, tokens: list[str], types: list[int], bos: str | None) -> str:
    """tokenizer.json text of the `tokenizers` model that the metadata describes."""
    if kind == "gpt2":
        tokenizer = _byte_level_bpe(gguf, tokens)
    else:
        tokenizer = _sentencepiece_bpe(gguf, tokens, types)
    _add_special_tokens(tokenizer, tokens, types)
    if bos is not None:
        from tokenizers import processors

        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))]
        )
    return tokenizer.to_str()


def _vocabulary(gguf: "GGUFFile") -> tuple[list[str], list[int]]:
    """(tokens, token types): distinct strings, and one integer type per token."""
    tokens = gguf.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError(f"{gguf.path}: tokenizer.ggml.tokens must be a list of strings, got {_show(tokens)}")
    if len(set(tokens)) != len(tokens):
        seen: set[str] = set()
        twice = next(t for t in tokens if t in seen or seen.add(t))
        raise TokenizerError(f"{gguf.path}: token {twice!r} appears twice in tokenizer.ggml.tokens")
    types = gguf.get("tokenizer.ggml.token_type")
    if types is None:
        return tokens, [1] * len(tokens)
    _check_per_token(gguf, "token_type", types, len(tokens), is_int, "integer")
    return tokens, types


def _check_per_token(gguf: "GGUFFile", key: str, values: Any, n: int, valid: Callable[[Any], bool], what: str) -> None:
    if not isinstance(values, list) or len(values) != n or not all(map(valid, values)):
        got = f"{len(values)} values" if isinstance(values, list) else _show(values)
        raise TokenizerError(f"{gguf.path}: tokenizer.ggml.{key} must hold one {what} per token ({n}), got {got}")


def _byte_level_bpe(gguf: "GGUFFile", tokens: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    pre = gguf.get("tokenizer.ggml.pre", "default")
    if not isinstance(pre, str) or pre not in _PRE_TOKENIZERS:
        raise TokenizerError(
            f"{gguf.path}: unsupported pre-tokenizer {_show(pre)} (supported: {', '.join(sorted(_PRE_TOKENIZERS))})"
        )
    merges = _merges(gguf)
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    style = _PRE_TOKENIZERS[pre]
    regex = _REGEXES.get(style, _GPT2_REGEX)
    if style == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
    steps = [pre_tokenizers.Split(Regex(regex), behavior="isolated"), byte_level]
    if style == "smollm":  # digits one by one, then GPT-2's split
        steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _sentencepiece_bpe(gguf: "GGUFFile", tokens: list[str], types: list[int]) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers

    scores = gguf.get("tokenizer.ggml.scores")
    if scores is None:
        scores = [-float(i) for i in range(len(tokens))]
    _check_per_token(gguf, "scores", scores, len(tokens), lambda x: is_int(x) or isinstance(x, float), "number")
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
    unk_id = gguf.get("tokenizer.ggml.unknown_token_id", 0)  # checked by _special_tokens
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


def _merges(gguf: "GGUFFile") -> list[tuple[str, str]]:
    """BPE merges "left right", split as llama.cpp does (at the first space after the first character)."""
    merges = gguf.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list):
        raise TokenizerError(f"{gguf.path}: tokenizer.ggml.merges must be a list of strings, got {_show(merges)}")
    pairs = []
    for merge in merges:
        cut = merge.find(" ", 1) if isinstance(merge, str) else -1
        if cut < 0 or cut == len(merge) - 1:
            raise TokenizerError(f"{gguf.path}: tokenizer.ggml.merges holds {_show(merge)}, not \"left right\"")
        pairs.append((merge[:cut], merge[cut + 1:]))
    return pairs


def _special_tokens(gguf: "GGUFFile", tokens: list[str]) -> dict[str, str]:
    """{"bos_token": ..., ...}; every id given must be an index into `tokens`."""
    specials = {}
    for role in ("bos", "eos", "unknown", "padding"):
        index = gguf.get(f"tokenizer.ggml.{role}_token_id")
        if index is None:
            continue
        if not is_int(index) or not 0 <= index < len(tokens):
            raise TokenizerError(f"{gguf.path}: tokenizer.ggml.{role}_token_id is {_show(index)}, "
                                 f"not a token index (0..{len(tokens) - 1})")
        name = {"unknown": "unk", "padding": "pad"}.get(role, role)
        specials[f"{name}_token"] = tokens[index]
    return specials



def _show(value: Any) -> str:
    """A metadata value for an error message, cut short (arrays can be long)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
