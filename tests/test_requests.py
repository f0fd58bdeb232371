"""A request's arguments, checked before any work (`engine.request`, `engine.sampling`,
`engine.session`): wrong types say what was expected, out-of-range numbers are refused,
text that is not UTF-8 is one clear error, a prompt far too long is refused before it is
tokenized, and a model whose first logits are NaN or Inf stops with one line."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.engine import SamplingParams
from mlxspec.engine.sampling import RandomKeys
from mlxspec.errors import CheckpointError, InputError, InputTypeError


@pytest.fixture(scope="module")
def loaded(hf_window_dir):
    return mlxspec.load(hf_window_dir)


@pytest.mark.parametrize("options, error, message", [
    ({"temperature": math.inf}, InputError, "temperature must be a finite number >= 0"),
    ({"temperature": math.nan}, InputError, "temperature must be a finite number >= 0"),
    ({"temperature": -0.5}, InputError, "temperature must be a finite number >= 0"),
    ({"temperature": "0.7"}, InputTypeError, "temperature must be a number"),
    ({"temperature": True}, InputTypeError, "temperature must be a number"),
    ({"top_k": 2.5}, InputTypeError, "top_k must be an integer"),
    ({"top_k": -1}, InputError, "top_k must be >= 0"),
    ({"top_p": 0.0}, InputError, r"top_p must be in \(0, 1\]"),
    ({"top_p": math.nan}, InputError, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, InputError, r"top_p must be in \(0, 1\]"),
    ({"seed": -2}, InputError, "seed must be in 0..2\\*\\*64-1"),
    ({"seed": 2**70}, InputError, "seed must be in 0..2\\*\\*64-1"),
    ({"seed": 1.5}, InputTypeError, "seed must be an integer"),
    ({"max_tokens": -1}, InputError, "max_tokens must be >= 0"),
    ({"max_tokens": 3.0}, InputTypeError, "max_tokens must be an integer"),
    ({"prefill_chunk": 0}, InputError, "prefill_chunk must be a positive integer"),
    ({"num_draft_tokens": 2.5}, InputTypeError, "num_draft_tokens must be an integer"),
    ({"num_draft_tokens": 10**6, "draft": "self"}, InputError, "num_draft_tokens must be in 1..64"),
    ({"draft_policy": "fastest"}, InputError, "draft_policy must be one of"),
])
def test_numbers_out_of_range_or_of_the_wrong_type(loaded, options, error, message):
    model, tokenizer = loaded
    if options.get("draft") == "self":
        options = {**options, "draft": model}
    with pytest.raises(error, match=message):
        mlxspec.generate(model, tokenizer, "Hello", **{"max_tokens": 2, **options})
    assert issubclass(error, ValueError)  # InputError is a ValueError; InputTypeError also a TypeError


def test_edge_values_that_are_valid(loaded):
    model, tokenizer = loaded
    for seed in (0, -1, 2**64 - 1, np.int64(7)):
        mlxspec.generate(model, tokenizer, "Hello", max_tokens=2, temperature=1.0, seed=seed)
    assert mlxspec.generate(model, tokenizer, "Hello", max_tokens=0) == ""
    mlxspec.generate(model, tokenizer, "Hello", max_tokens=np.int32(2), top_k=np.int64(5), temperature=0.5)
    RandomKeys(2**64 - 1)()


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (40, 0.9)])
def test_a_tiny_temperature_is_as_good_as_greedy_never_nan(loaded, top_k, top_p):
    model, tokenizer = loaded
    greedy = mlxspec.generate(model, tokenizer, "Hello there", max_tokens=12)
    for temperature in (1e-40, 1e-12, 1e-7):
        assert mlxspec.generate(model, tokenizer, "Hello there", max_tokens=12, temperature=temperature, seed=3,
                                top_k=top_k, top_p=top_p) == greedy


@pytest.mark.parametrize("top_p", [1e-46, 1e-300, 5e-324])
def test_a_top_p_below_float32_keeps_the_most_likely_token(loaded, top_p):
    model, tokenizer = loaded
    greedy = mlxspec.generate(model, tokenizer, "Hello there", max_tokens=12)
    assert mlxspec.generate(model, tokenizer, "Hello there", max_tokens=12, temperature=1.0, top_p=top_p,
                            seed=5) == greedy


def test_a_chat_template_that_fails_while_rendering_is_one_error(hf_window_dir):
    model, tokenizer = mlxspec.load(hf_window_dir)
    for template in ("{{ messages[0]['content'] + 1 }}", "{% for i in range(10**9) %}x{% endfor %}"):
        tokenizer.chat_template = template
        tokenizer.__dict__.pop("_chat", None)
        with pytest.raises(mlxspec.TokenizerError, match="chat template failed"):
            mlxspec.generate(model, tokenizer, "hi", chat=True, max_tokens=2)
    tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    tokenizer.__dict__.pop("_chat", None)
    with pytest.raises(InputError, match="chat template: roles must alternate"):
        mlxspec.generate(model, tokenizer, "hi", chat=True, max_tokens=2)


@pytest.mark.parametrize("prompt, message", [
    (b"Hello", "got bytes \\(decode it first"),
    (bytearray(b"Hello"), "got bytearray"),
    ([1.0, 2.0], "item 0 is 1.0"),
    ([1, 2.5], "item 1 is 2.5"),
    ([1, True], "item 1 is True"),
    (["first prompt", "second prompt"], "a list of strings is several prompts"),
    (42, "got int"),
    (None, "got NoneType"),
    (mx.array([[1, 2]]), "1-D integer array"),
    (np.array([1.0, 2.0]), "1-D integer array"),
])
def test_prompts_of_the_wrong_type(loaded, prompt, message):
    model, tokenizer = loaded
    with pytest.raises(InputTypeError, match=message):
        mlxspec.generate(model, tokenizer, prompt, max_tokens=2)


def test_token_id_arrays_and_out_of_range_ids(loaded):
    model, tokenizer = loaded
    ids = tokenizer.encode("Hello there")
    expected = mlxspec.generate(model, tokenizer, ids, max_tokens=3)
    assert mlxspec.generate(model, tokenizer, np.array(ids), max_tokens=3) == expected
    assert mlxspec.generate(model, tokenizer, mx.array(ids), max_tokens=3) == expected
    for bad in (-1, model.args.vocab_size):
        with pytest.raises(InputError, match=f"token id {bad}, outside the vocabulary"):
            mlxspec.generate(model, tokenizer, [1, bad], max_tokens=2)


def test_paths_and_strings_where_objects_belong(loaded, hf_window_dir):
    model, tokenizer = loaded
    with pytest.raises(InputTypeError, match=r"the target must be a loaded Model \(model, tokenizer = mlxspec.load"):
        mlxspec.generate(str(hf_window_dir), tokenizer, "Hello")
    with pytest.raises(InputTypeError, match="tokenizer must be an mlxspec Tokenizer"):
        mlxspec.generate(model, "mistral", "Hello")
    with pytest.raises(InputTypeError, match=r"draft must be a loaded draft \(mlxspec.load_draft"):
        mlxspec.generate(model, tokenizer, "Hello", draft=str(hf_window_dir))
    with pytest.raises(InputTypeError, match="expected a folder path or a Hugging Face repo id"):
        mlxspec.load(model)
    with pytest.raises(InputTypeError, match="pair_dir must be a folder path"):
        mlxspec.load_pair(3)
    with pytest.raises(InputTypeError, match="dtype must be one of mx.float32"):
        mlxspec.load(hf_window_dir, dtype="float64")
    assert mlxspec.load(hf_window_dir, dtype="float16")[0].model.norm.weight.dtype == mx.float16


@pytest.mark.parametrize("prompt", ["caf\udce9", [{"role": "user", "content": "caf\udce9"}]])
def test_text_that_is_not_utf8(loaded, prompt):
    model, tokenizer = loaded
    with pytest.raises(InputError, match="is not valid UTF-8 text: character 3 is U\\+DCE9 \\(the byte 0xe9"):
        mlxspec.generate(model, tokenizer, prompt, max_tokens=2)


def test_a_prompt_far_too_long_is_refused_untokenized(loaded, monkeypatch):
    model, tokenizer = loaded
    huge = "word " * 2_000_000  # 10 MB for a 512-token model
    monkeypatch.setattr(type(tokenizer), "encode", lambda *a, **k: pytest.fail("tokenized"))
    with pytest.raises(InputError, match="cannot fit in the model's context of 512 tokens"):
        mlxspec.generate(model, tokenizer, huge, max_tokens=2)
    with pytest.raises(InputError, match="cannot fit in the model's context of 512 tokens"):
        mlxspec.generate(model, tokenizer, [{"role": "user", "content": huge}], max_tokens=2)
    monkeypatch.undo()
    bound = (512 + 16) * tokenizer.max_piece_bytes  # below the bound: tokenized, then counted exactly
    with pytest.raises(InputError, match="more than the model's context of 512"):
        mlxspec.generate(model, tokenizer, "a" * (bound // 2), max_tokens=2)


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("whose", ["target", "draft"])
@pytest.mark.filterwarnings("ignore:the draft")  # a draft as big as the target: fine for this check
def test_nan_or_inf_weights_stop_at_the_first_step(hf_window_dir, whose, value):
    target, tokenizer = mlxspec.load(hf_window_dir)
    draft, _ = mlxspec.load(hf_window_dir)
    broken = target if whose == "target" else draft
    layer = broken.model.layers[0].mlp.down_proj
    layer.weight = mx.full(layer.weight.shape, value)
    session = mlxspec.Session(target, tokenizer, draft if whose == "draft" else None, num_draft_tokens=2,
                              draft_policy="fixed")
    with pytest.raises(CheckpointError, match=f"the {whose}'s first logits hold NaN or Inf"):
        session.generate("Hello there", max_tokens=4)

