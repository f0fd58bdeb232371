"""`kv_bits` with models mlx-lm runs: their growing caches become mlx-lm's quantized ones,
which trim exactly, so greedy speculation still equals plain decoding over the same cache
(as target and as draft); caches of a kind that cannot be quantized and roll back (Gemma
3's rotating ones) are one line at the session."""

from __future__ import annotations

import mlx.core as mx
import pytest

import mlxspec
from architectures import architecture_checkpoint
from mlxspec.errors import InputError
from mlxspec.load import load_model

PROMPT = [1, *range(40, 70)]
VOCAB = 512


def greedy(session: mlxspec.Session, **options) -> tuple[list[int], int]:
    steps = list(session.stream(PROMPT, max_tokens=24, **options))
    return [s.token for s in steps], steps[-1].stats.drafted if hasattr(steps[-1].stats, "drafted") else 0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A Phi-3 and a GPT-NeoX (both outside the port) of head_dim 32, and a Gemma 3."""
    made = {}
    for seed, name in enumerate(["phi3", "gpt_neox"]):
        folder = architecture_checkpoint(tmp_path_factory.mktemp(name), name, VOCAB, seed, head_scale=4.0,
                                         num_attention_heads=2, **({"num_key_value_heads": 2} if name == "phi3" else {}))
        made[name] = load_model(folder, dtype=mx.float32)
    gemma = architecture_checkpoint(tmp_path_factory.mktemp("gemma3_text"), "gemma3_text", VOCAB, 3)
    made["gemma3_text"] = load_model(gemma, dtype=mx.float32)
    return made


@pytest.mark.filterwarnings("ignore:the draft")
@pytest.mark.parametrize("target, draft", [("phi3", "gpt_neox"), ("gpt_neox", "phi3"), ("phi3", "ngram")])
def test_greedy_speculation_equals_plain_over_mlx_lms_quantized_caches(models, target, draft):
    from mlx_lm.models.cache import QuantizedKVCache

    model = models[target]
    kv = dict(kv_bits=8, kv_group_size=32)
    plain, _ = greedy(mlxspec.Session(model, None, **kv), speculative=False)
    for k in (1, 3):
        session = mlxspec.Session(model, None, models.get(draft, draft), num_draft_tokens=k, draft_policy="fixed", **kv)
        tokens, drafted = greedy(session)
        assert tokens == plain, (target, draft, k)
        assert drafted > 0 or draft == "ngram"
    assert all(isinstance(c, QuantizedKVCache) for c in models[target].make_cache(kv=mlxspec.models.KVQuantization(8, 32)))


@pytest.mark.filterwarnings("ignore:the draft")
def test_caches_that_cannot_be_quantized_are_one_line(models):
    with pytest.raises(InputError, match="RotatingKVCache caches, which cannot be quantized and still roll back"):
        mlxspec.Session(models["gemma3_text"], None, kv_bits=4, kv_group_size=32)
    with pytest.raises(InputError, match="RotatingKVCache"):  # as a draft, too
        mlxspec.Session(models["phi3"], None, models["gemma3_text"], kv_bits=4, kv_group_size=32)
