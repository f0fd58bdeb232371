"""One small tokenizer interface over SentencePiece (`tokenizer.model`, Mistral's) and HF
`tokenizer.json` (read by the `tokenizers` library: transformers is never imported), with a
streaming detokenizer and the model's chat template."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Sequence

from ..errors import TokenizerError
from ..reading import TOKENIZER_LIMIT, regular_file
from ..tools.prompt import chat_text
from .chat import MISTRAL_INSTRUCT, ChatTemplate, Message, as_messages, read_chat_template, side_file
from .detokenizer import DecodeStreamDetokenizer, Detokenizer, StreamingDetokenizer
from .spelling import byte_level_bytes, metaspace_bytes


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

    def token_bytes(self) -> list[bytes | None]:
        """The bytes each token id spells in running text; None for a token that text never
        becomes (SentencePiece's control tokens). HF's added tokens spell their content: its
        `encode` turns that text into them. Built once per tokenizer (pairing a draft and
        drafting with it both read it); not to be changed by the caller."""
        if "_token_bytes" not in self.__dict__:
            self._token_bytes = self._spelled_tokens()
        return self._token_bytes

    def _spelled_tokens(self) -> list[bytes | None]:
        raise NotImplementedError

    def special_ids(self) -> set[int]:
        """Ids of the tokens that mark structure rather than spell text (BOS, EOS, control
        tokens, chat markers): a grammar over text never matches them."""
        marks = {i for i, spelled in enumerate(self.token_bytes()) if spelled is None}
        return marks | self.eos_ids | ({self.bos_id} if self.bos_id is not None else set())

    @functools.cached_property
    def max_piece_bytes(self) -> int:
        """The most UTF-8 bytes one token's piece takes: text of n bytes needs at least
        n / max_piece_bytes tokens (which lets a prompt far too long be refused untokenized)."""
        return max([1, *(len(p.encode("utf-8", "surrogatepass")) for p in self.pieces() if p is not None)])

    def specials(self) -> dict[str, str]:
        """The special-token strings a chat template may use (`bos_token`, `eos_token`, ...)."""
        return {}

    def encode_special(self, text: str) -> list[int]:
        """Token ids of text in which special-token strings (from a chat template) stand for
        their tokens; no BOS is added."""
        raise NotImplementedError

    def detokenizer(self) -> Detokenizer:
        """A fresh streaming detokenizer."""
        return StreamingDetokenizer(self.decode)

    def chat_format(self) -> ChatTemplate:
        """The model's chat template, compiled once; without one, Mistral's `[INST] ... [/INST]`."""
        if "_chat" not in self.__dict__:
            self._chat = ChatTemplate(self.chat_template or MISTRAL_INSTRUCT, self.specials())
        return self._chat

    def apply_chat(self, prompt: str | Sequence[Message], tools: list[dict] | None = None) -> list[int]:
        """Token ids of a conversation (a string is one user turn) in the model's chat format,
        the assistant's turn opened, offering `tools` (checked OpenAI function tools; see
        `mlxspec.tools.prompt`)."""
        return self.encode_special(chat_text(self.chat_format(), as_messages(prompt), tools))


class SentencePieceTokenizer(Tokenizer):
    """Mistral's SentencePiece model (`tokenizer.model`)."""

    def __init__(self, model_file: Path, chat_template: str | None = None) -> None:
        import sentencepiece as spm

        readable(model_file)
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as exc:
            raise TokenizerError(f"{model_file}: not a SentencePiece model ({exc})") from None
        self.vocab_size = self._sp.get_piece_size()
        bos, eos = self._sp.bos_id(), self._sp.eos_id()
        self.bos_id = bos if bos >= 0 else None
        self.eos_ids = {eos} if eos >= 0 else set()
        self.chat_template = chat_template
        self._special_ids = {self._sp.id_to_piece(i): i for i in (bos, eos) if i >= 0}

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._sp.encode(text)
        return [self.bos_id, *ids] if add_bos and self.bos_id is not None else ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.decode(list(ids))

    def pieces(self) -> list[str]:
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def _spelled_tokens(self) -> list[bytes | None]:
        sp = self._sp
        return [None if sp.is_control(i) or sp.is_unknown(i) else metaspace_bytes(sp.id_to_piece(i))
                for i in range(self.vocab_size)]

    def specials(self) -> dict[str, str]:
        names = {self.bos_id: "bos_token", next(iter(self.eos_ids), None): "eos_token"}
        return {names[i]: piece for piece, i in self._special_ids.items() if names.get(i)}

    def encode_special(self, text: str) -> list[int]:
        # SentencePiece would spell "<s>" out as text: split on the special strings first
        if not self._special_ids:
            return self._sp.encode(text)
        ids: list[int] = []
        for part in re.split("(" + "|".join(map(re.escape, self._special_ids)) + ")", text):
            if part in self._special_ids:
                ids.append(self._special_ids[part])
            elif part:
                ids.extend(self._sp.encode(part))
        return ids


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer: `tokenizer.json`, with the special tokens, BOS policy and
    chat template of `tokenizer_config.json` (and `special_tokens_map.json`), and the extra
    end-of-sequence ids of `generation_config.json`."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer as RustTokenizer

        readable(model_dir / "tokenizer.json")
        try:
            self._tok = RustTokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable files
            raise TokenizerError(f"{model_dir / 'tokenizer.json'}: cannot load tokenizer ({exc})") from None
        config = {**side_file(model_dir / "special_tokens_map.json"),
                  **side_file(model_dir / "tokenizer_config.json")}
        self._specials = {k: s for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                          if (s := _token_string(config.get(k))) is not None}
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id = self._id(self._specials.get("bos_token"))
        eos = {self._id(self._specials.get("eos_token"))}
        extra = side_file(model_dir / "generation_config.json").get("eos_token_id")
        eos.update(i for i in (extra if isinstance(extra, list) else [extra]) if isinstance(i, int))
        self.eos_ids = {i for i in eos if isinstance(i, int)}
        self.chat_template = read_chat_template(model_dir)
        add_bos = config.get("add_bos_token")
        self.adds_bos = self.bos_id is not None and (add_bos if isinstance(add_bos, bool) else self._post_processor_adds_bos())

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    def _post_processor_adds_bos(self) -> bool:
        probe = self._tok.encode("a", add_special_tokens=True).ids
        return bool(probe) and probe[0] == self.bos_id

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """With `add_bos`, BOS is prepended if this tokenizer adds one (`add_bos_token` or its
        post-processor: Llama and Mistral do, SmolLM2 and other GPT-2-style ones do not)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if add_bos and self.adds_bos else ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def detokenizer(self) -> Detokenizer:
        return DecodeStreamDetokenizer(self._tok, self.decode)

    def pieces(self) -> list[str]:
        return [self._tok.id_to_token(i) for i in range(self.vocab_size)]

    def _spec(self) -> dict:
        """tokenizer.json as the tokenizers library holds it (parsed when asked, not kept: it
        may be megabytes; what is made of it is kept instead, e.g. `token_bytes`)."""
        return json.loads(self._tok.to_str())

    @staticmethod
    def _added(spec: dict) -> dict[int, dict]:
        """The added tokens (special ones too), by id."""
        return {a["id"]: a for a in spec.get("added_tokens", []) if isinstance(a, dict) and "id" in a}

    def _spelled_tokens(self) -> list[bytes | None]:
        spec = self._spec()
        byte_level = "ByteLevel" in json.dumps(spec.get("decoder"))
        added = self._added(spec)
        out: list[bytes | None] = []
        for i, piece in enumerate(self.pieces()):
            if piece is None:
                out.append(None)
            elif i in added:  # added tokens (special ones too) are matched in text as they are written
                out.append(str(added[i].get("content", "")).encode("utf-8"))
            else:
                out.append(byte_level_bytes(piece) if byte_level else metaspace_bytes(piece))
        return out

    def special_ids(self) -> set[int]:
        return super().special_ids() | {i for i, a in self._added(self._spec()).items() if a.get("special")}

    def specials(self) -> dict[str, str]:
        return dict(self._specials)

    def encode_special(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids


def _token_string(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def readable(path: Path) -> None:
    """A tokenizer file the tokenizer libraries may open: a regular file of a sane size (a
    pipe, `/dev/zero` or a sparse giant would hang them)."""
    try:
        regular_file(path, TOKENIZER_LIMIT)
    except OSError as exc:
        raise TokenizerError(f"{path}: {exc.strerror}") from None


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
