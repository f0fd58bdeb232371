"""One small tokenizer interface over SentencePiece (`tokenizer.model`, Mistral's) and
HF `tokenizer.json`, with a streaming detokenizer and the model's chat format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import TokenizerError

REPLACEMENT = "\ufffd"


class StreamingDetokenizer:
    """Turns token ids into text deltas as they arrive.

    Each token is decoded together with a few already-emitted tokens of context, and the
    context's own text is subtracted: SentencePiece's leading-space pieces keep their space,
    and a delta is held back while it ends in an incomplete UTF-8 sequence (byte-fallback
    pieces like `<0xF0>` are released only once the whole character is there). The joined
    deltas equal `decode(all_tokens)`.
    """

    def __init__(self, decode: Callable[[list[int]], str], context: int = 3, max_pending: int = 8) -> None:
        self._decode = decode
        self._context_len = context
        self._max_pending = max_pending
        self._context: list[int] = []
        self._context_text = ""
        self._pending: list[int] = []
        self.text = ""

    def add(self, token: int) -> str:
        """Feed one token id; return the newly complete text (possibly empty)."""
        self._pending.append(token)
        text = self._decode(self._context + self._pending)
        if text.endswith(REPLACEMENT) and len(self._pending) < self._max_pending:
            return ""
        return self._emit(text)

    def finalize(self) -> str:
        """Flush whatever is pending (an incomplete character comes out as U+FFFD)."""
        if not self._pending:
            return ""
        return self._emit(self._decode(self._context + self._pending))

    def _emit(self, text: str) -> str:
        delta = text[len(self._context_text):] if text.startswith(self._context_text) else text
        seen = self._context + self._pending
        self._pending = []
        # Keep the shortest clean suffix (decodes without U+FFFD) of at least `context` tokens.
        shortest = min(self._context_len, len(seen))
        for n in range(shortest, min(len(seen), shortest + 4) + 1):
            self._context = seen[-n:]
            self._context_text = self._decode(self._context)
            if REPLACEMENT not in self._context_text:
                break
        self.text += delta
        return delta


class Tokenizer:
    """What generation needs from a tokenizer. Build one with `load_tokenizer`."""

    bos_id: int | None
    eos_ids: set[int]
    vocab_size: int
    chat_template: str | None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of `text`, with the BOS token first when `add_bos` and the model has one."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens left out."""
        raise NotImplementedError

    def pieces(self) -> list[str]:
        """Every token's piece string, by id (used to compare vocabularies)."""
        raise NotImplementedError

    def detokenizer(self) -> StreamingDetokenizer:
        """A fresh streaming detokenizer."""
        return StreamingDetokenizer(self.decode)

    def apply_chat(self, prompt: str) -> list[int]:
        """Token ids of a single user turn in the model's chat format.

        Uses the chat template shipped with the model; without one, Mistral's instruct
        format `<s>[INST] prompt [/INST]`."""
        if self.chat_template is None:
            return self.encode(f"[INST] {prompt} [/INST]", add_bos=True)
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise TokenizerError(f"chat template: {message}")

        env.globals["raise_exception"] = raise_exception
        text = env.from_string(self.chat_template).render(
            messages=[{"role": "user", "content": prompt}], add_generation_prompt=True,
            **self._special_strings(),
        )
        return self._encode_with_specials(text)

    def _special_strings(self) -> dict[str, str]:
        return {}

    def _encode_with_specials(self, text: str) -> list[int]:
        return self.encode(text, add_bos=False)


class SentencePieceTokenizer(Tokenizer):
    """Mistral's SentencePiece model (`tokenizer.model`)."""

    def __init__(self, model_file: Path, chat_template: str | None = None) -> None:
        import sentencepiece as spm

        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{model_file}: not a SentencePiece model ({exc})") from None
        self.vocab_size = self._sp.get_piece_size()
        bos = self._sp.bos_id()
        self.bos_id = bos if bos >= 0 else None
        self.eos_ids = {self._sp.eos_id()} if self._sp.eos_id() >= 0 else set()
        self.chat_template = chat_template

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._sp.encode(text)
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))

    def pieces(self) -> list[str]:
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def _special_strings(self) -> dict[str, str]:
        return {"bos_token": "<s>", "eos_token": "</s>"}

    def _encode_with_specials(self, text: str) -> list[int]:
        # Templates write "<s>" literally; SentencePiece would spell it out as text.
        bos = self._special_strings()["bos_token"]
        ids: list[int] = []
        for i, part in enumerate(text.split(bos)):
            if i > 0 and self.bos_id is not None:
                ids.append(self.bos_id)
            if part:
                ids.extend(self._sp.encode(part))
        return ids


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer (`tokenizer.json` + `tokenizer_config.json`)."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        except Exception as exc:  # transformers raises many kinds here
            raise TokenizerError(f"{model_dir}: cannot load tokenizer ({exc})") from None
        self.vocab_size = len(self._tok)
        self.bos_id = self._tok.bos_token_id
        eos = self._tok.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.chat_template = getattr(self._tok, "chat_template", None)
        self.adds_bos = self.bos_id is not None and _adds_bos(self._tok, model_dir)

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """With `add_bos`, BOS is prepended if this tokenizer adds one (`add_bos_token` or its
        post-processor: Llama and Mistral do, SmolLM2 and other GPT-2-style ones do not)."""
        ids = self._tok.encode(text, add_special_tokens=False)
        return [self.bos_id, *ids] if add_bos and self.adds_bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def pieces(self) -> list[str]:
        return self._tok.convert_ids_to_tokens(list(range(self.vocab_size)))

    def apply_chat(self, prompt: str) -> list[int]:
        if self.chat_template is None:
            return super().apply_chat(prompt)
        ids: Any = self._tok.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def _adds_bos(tok: Any, model_dir: Path) -> bool:
    """Whether encoding starts with BOS: `add_bos_token` in tokenizer_config.json when set,
    else what the tokenizer's post-processor does (Mistral's and Llama's add it)."""
    config: dict[str, Any] = {}
    config_file = model_dir / "tokenizer_config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    if isinstance(config.get("add_bos_token"), bool):
        return config["add_bos_token"]
    probe = tok.encode("a", add_special_tokens=True)
    return bool(probe) and probe[0] == tok.bos_token_id


def read_chat_template(model_dir: Path) -> str | None:
    """The chat template shipped beside a SentencePiece model (chat_template.jinja or tokenizer_config.json)."""
    for name in ("chat_template.jinja",):
        if (model_dir / name).is_file():
            return (model_dir / name).read_text()
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text()).get("chat_template")
        except json.JSONDecodeError:
            raise TokenizerError(f"{config} is not valid JSON") from None
        return template if isinstance(template, str) else None
    return None


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The tokenizer stored with a model: HF `tokenizer.json` when present, else
    SentencePiece `tokenizer.model` (also Mistral's `tokenizer.model.v3` naming)."""
    if (model_dir / "tokenizer.json").is_file():
        return HFTokenizer(model_dir)
    sp_files = sorted(model_dir.glob("tokenizer.model*"))
    if sp_files:
        return SentencePieceTokenizer(sp_files[0], read_chat_template(model_dir))
    raise TokenizerError(f"{model_dir}: no tokenizer.json or tokenizer.model found")


def compare_vocabularies(a: Tokenizer, b: Tokenizer) -> tuple[str, str]:
    """("identical" | "compatible" | "different", why) for two tokenizers. Compatible: same
    special ids and the same piece for every id both have (one vocabulary padded)."""
    if (a.bos_id, a.eos_ids) != (b.bos_id, b.eos_ids):
        return "different", (f"special ids differ (bos {a.bos_id} vs {b.bos_id}, "
                              f"eos {sorted(a.eos_ids)} vs {sorted(b.eos_ids)})")
    pa, pb = a.pieces(), b.pieces()
    shared = min(len(pa), len(pb))
    mismatch = next((i for i in range(shared) if pa[i] != pb[i]), None)
    if mismatch is not None:
        return "different", f"token {mismatch} is {pa[mismatch]!r} in one, {pb[mismatch]!r} in the other"
    if len(pa) != len(pb):
        return "compatible", f"same pieces for the {shared} shared ids; vocabulary sizes {len(pa)} vs {len(pb)}"
    return "identical", f"same {len(pa)} pieces and special ids"
