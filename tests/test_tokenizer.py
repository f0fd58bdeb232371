"""The real Mistral-7B tokenizer through both back ends; streaming decode == full decode."""

from __future__ import annotations

import json

import pytest

from mlxspec.text import HFTokenizer, SentencePieceTokenizer, StreamingDetokenizer, read_chat_template

TEXTS = [
    "Hello, world! This is plain ASCII text.",
    "Crème brûlée, naïve façade, Ångström, ¿qué tal?",
    "日本語のテキストと中文文本，还有한국어도 있습니다。",
    "Emoji: 😀🚀🧑‍💻 and flags 🇫🇷 mixed with text 🎉!",
    "double  spaces,\ttabs and\nnew lines\n\n  indented",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code",
]


@pytest.fixture(scope="module")
def sp(sp_model_file):
    return SentencePieceTokenizer(sp_model_file)


@pytest.fixture(scope="module")
def hf(hf_tokenizer_dir):
    return HFTokenizer(hf_tokenizer_dir)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("backend", ["sp", "hf"])
def test_round_trip(request, backend, text):
    tok = request.getfixturevalue(backend)
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id == 1
    assert tok.decode(ids) == text
    assert tok.encode(text, add_bos=False) == ids[1:]


@pytest.mark.parametrize("text", TEXTS)
def test_backends_agree(sp, hf, text):
    # HF's converted BPE splits runs of spaces differently from SentencePiece (a known
    # difference of the converted tokenizer); the text still round-trips identically.
    if "  " not in text:
        assert sp.encode(text) == hf.encode(text)
    assert sp.decode(hf.encode(text)) == hf.decode(sp.encode(text)) == text
    assert sp.pieces()[:300] == hf.pieces()[:300]


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("backend", ["sp", "hf"])
def test_streaming_equals_full_decode(request, backend, text):
    tok = request.getfixturevalue(backend)
    ids = tok.encode(text, add_bos=False)
    detok = tok.detokenizer()
    deltas = [detok.add(t) for t in ids]
    deltas.append(detok.finalize())
    assert "".join(deltas) == tok.decode(ids)
    assert not any("\ufffd" in d for d in deltas)  # never half a character
    # every prefix shown so far is a prefix of the final text
    shown = ""
    for d in deltas:
        shown += d
        assert tok.decode(ids).startswith(shown)


def test_byte_fallback_emoji_assembles(sp):
    # U+1F9EA (test tube) is not in the vocabulary: it is spelled as four <0x..> byte pieces
    ids = sp.encode("🧪", add_bos=False)
    pieces = [sp.pieces()[i] for i in ids]
    assert sum(p.startswith("<0x") for p in pieces) == 4
    detok = sp.detokenizer()
    assert [detok.add(i) for i in ids][-1] == "🧪"
    assert detok.text == "🧪"


def test_leading_space_kept_mid_stream(sp):
    ids = sp.encode("one two three", add_bos=False)
    detok = sp.detokenizer()
    assert [detok.add(i) for i in ids] == ["one", " two", " three"]


def test_incomplete_character_is_flushed_at_end():
    detok = StreamingDetokenizer(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    assert detok.add(0xF0) == ""
    assert detok.add(0x9F) == ""
    assert detok.finalize() == "\ufffd"


def mistral_common_chat_ids(prompt: str) -> list[int]:
    """The reference: mistral-common's own v1 instruct encoding."""
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    request = ChatCompletionRequest(messages=[UserMessage(content=prompt)])
    return MistralTokenizer.v1().encode_chat_completion(request).tokens


@pytest.mark.parametrize("prompt", ["Hi there", "Écris un haïku 🌸"])
def test_chat_format_matches_mistral_common(sp, sp_model_file, tmp_path, prompt):
    assert sp.apply_chat(prompt) == mistral_common_chat_ids(prompt)  # built-in [INST] format
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": (
        "{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}"
    )}))
    templated = SentencePieceTokenizer(sp_model_file, read_chat_template(tmp_path))
    assert templated.apply_chat(prompt) == mistral_common_chat_ids(prompt)


def test_hf_chat_template(hf):
    ids = hf.apply_chat("Hi there")
    assert ids[0] == 1 and hf.decode(ids).replace(" ", "") == "[INST]Hithere[/INST]"


def test_hf_tokenizer_matches_transformers(hf, hf_tokenizer_dir):
    """tokenizer.json read without transformers gives what transformers gives."""
    from transformers import AutoTokenizer

    oracle = AutoTokenizer.from_pretrained(str(hf_tokenizer_dir))
    assert (hf.vocab_size, hf.bos_id, hf.eos_ids) == (len(oracle), oracle.bos_token_id, {oracle.eos_token_id})
    for text in TEXTS:
        ids = oracle.encode(text, add_special_tokens=True)
        assert hf.encode(text) == ids
        assert hf.decode(ids) == oracle.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Crème brûlée?"}]
    from mlxspec.text import ChatTemplate

    rendered = ChatTemplate(hf.chat_template, hf.specials()).render(messages)
    assert rendered == oracle.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # the ids: as mistral-common encodes the instruct format (transformers 5 drops the space
    # SentencePiece puts before "[INST]" after <s>; the tokenizer.json itself and mistral-common keep it)
    assert hf.apply_chat("Hi there") == mistral_common_chat_ids("Hi there")


def test_bad_chat_messages_are_input_errors(hf, sp_model_file, tmp_path):
    from mlxspec.errors import InputError

    for bad in ([], [{"role": "user"}], [{"role": "user", "content": 3}], ["hi"]):
        with pytest.raises(InputError):
            hf.apply_chat(bad)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('roles must start with user') }}{% endif %}ok"
    )}))
    strict = SentencePieceTokenizer(sp_model_file, read_chat_template(tmp_path))
    with pytest.raises(InputError, match="roles must start with user"):
        strict.apply_chat([{"role": "assistant", "content": "hi"}])


@pytest.mark.parametrize("ids", [[3, 131, 14258], [4, 131, 14258, 1200, 29871], [55, 200, 14258]])
def test_byte_runs_the_decode_stream_refuses_still_stream(hf, ids):
    # tokenizers' DecodeStream raises "Invalid prefix encountered" on a stray byte piece followed
    # by a word (as a random or fine-tuned model may write): the stream goes on, never a traceback
    detok = hf.detokenizer()
    deltas = [detok.add(t) for t in ids] + [detok.finalize()]
    assert "pleted" in "".join(deltas) and hf.decode(ids).endswith("".join(deltas)[-6:])
