"""Feature drafts (EAGLE): exact like any draft (greedy == autoregressive, sampled output
has the target's distribution), fed the right hidden states (an oracle-like draft is
accepted far more often than a random one, which an off-by-one pairing would undo), its
cache equal to a fresh pass over the verified pairs, and loaded from a folder."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxspec.drafts import DRAFT_TYPE, FeatureDraft, draft_config
from mlxspec.engine.sampling import SamplingParams
from mlxspec.errors import ConfigError, InputError
from mlxspec.load import load_draft
from mlxspec.models import Model
from mlxspec.models.config import ModelArgs
from full_run import full_only
from test_speculative import PROMPT, chi2_critical, new_generation, sampled_chi2, tiny, tokens


def feature_draft(target: Model, seed: int, oracle: bool = False, head_vocab: int | None = None,
                  feature_layers: list[int] | None = None) -> FeatureDraft:
    """A random feature draft, or (`oracle`) one that re-runs the target's single block on
    the token embedding: it then nearly reproduces the target's next feature. With
    `feature_layers` it also reads those blocks' outputs (`fuse` random, or for the oracle
    an average of the final feature and the one block's normalised output, which agree)."""
    mx.random.seed(seed)
    t = target.args
    args = ModelArgs(hidden_size=t.hidden_size, num_hidden_layers=1, intermediate_size=t.intermediate_size,
                     num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                     vocab_size=t.vocab_size, head_vocab_size=head_vocab, feature_layers=feature_layers)
    draft = FeatureDraft(args)
    if head_vocab is not None:
        draft.token_ids = mx.array(np.sort(np.random.default_rng(seed).choice(t.vocab_size, head_vocab, replace=False)),
                                   dtype=mx.int32)
    if oracle:
        d = t.hidden_size
        draft.fc.weight = mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1)
        draft.fc.bias = mx.zeros((d,))
        draft.layers[0].update(target.layers[0].parameters())
        if feature_layers:  # the one block's output, normalised, is the final feature: an average of equals
            draft.fuse.weight = mx.concatenate([mx.eye(d)] * (1 + len(feature_layers)), axis=1) / (1 + len(feature_layers))
    mx.eval(draft.parameters())
    return draft


def one_block_target(seed: int, vocab: int = 64, window: int | None = 8) -> Model:
    """A one-block target whose final norm only rescales (argmax-neutral), for the oracle."""
    model = tiny(seed, vocab=vocab, window=window, layers=1)
    model.model.norm.weight = mx.ones_like(model.model.norm.weight)
    return model


TARGET = one_block_target(20, window=None)
DEEP = tiny(30, vocab=64, window=6, layers=3)  # a windowed target of three blocks, for fused features
FEATURE_DRAFTS = {"random": feature_draft(TARGET, 21, head_vocab=48), "oracle": feature_draft(TARGET, 22, oracle=True),
                  "fused": feature_draft(DEEP, 23, feature_layers=[0, 1])}


@pytest.mark.parametrize("name", list(FEATURE_DRAFTS))
def test_greedy_feature_speculation_equals_greedy_autoregressive(name):
    draft, target = FEATURE_DRAFTS[name], DEEP if name == "fused" else TARGET
    for prompt in (PROMPT, [5]):
        expected, _ = tokens(target, prompt, 40)
        for k in (1, 3, 5):
            got, stats = tokens(target, prompt, 40, draft=draft, num_draft_tokens=k, draft_policy="fixed", prefill_chunk=4)
            assert got == expected, (name, prompt, k)
        got, _ = tokens(target, prompt, 40, draft=draft, num_draft_tokens=4, prefill_chunk=4)  # adaptive, plain runs
        assert got == expected, (name, prompt, "adaptive")


def test_taps_are_the_outputs_of_the_named_blocks():
    """`model.model(tokens, cache, taps)`: the final hidden states, then each tapped block's
    output as a block-by-block pass computes it, with or without a cache."""
    ids = mx.array([PROMPT])
    h, outputs = DEEP.model.embed_tokens(ids), []
    mask = DEEP.model.block_inputs(ids.shape[1], None)[0]
    for layer in DEEP.layers:
        h = layer(h, mask, None)
        outputs.append(h)
    d = DEEP.args.hidden_size
    wide = DEEP.model(ids, None, (0, 2))
    assert wide.shape[-1] == 3 * d
    assert mx.allclose(wide[..., :d], DEEP.model(ids, None), atol=1e-5)
    assert mx.allclose(wide[..., d:], mx.concatenate([outputs[0], outputs[2]], axis=-1), atol=1e-5)
    cache = DEEP.make_cache()
    cached = mx.concatenate([DEEP.model(ids[:, :4], cache, (0, 2)), DEEP.model(ids[:, 4:], cache, (0, 2))], axis=1)
    assert mx.allclose(cached, wide, atol=1e-4)


def test_oracle_feature_draft_is_accepted_often():
    """The pairing (f_t, x_{t+1}) is what makes the oracle agree; shifting it by one breaks it."""
    rates = {}
    for name in ("oracle", "random"):
        draft = FEATURE_DRAFTS[name]
        _, stats = tokens(TARGET, PROMPT, 60, draft=draft, num_draft_tokens=3, draft_policy="fixed")
        rates[name] = stats.acceptance_rate
    assert rates["oracle"] > 0.6 and rates["random"] < 0.25, rates


@pytest.mark.parametrize("name", ["oracle", "fused"])
def test_feature_cache_equals_a_fresh_pass_over_verified_pairs(name):
    draft, target = FEATURE_DRAFTS[name], DEEP if name == "fused" else TARGET
    decoder = new_generation(target, draft, SamplingParams(1.0), k=4, seed=3, chunk=4)
    emitted = [decoder.prefill(PROMPT)]
    for i in range(12):
        new = decoder.round(1 + i % 4) if i % 3 else list(decoder.plain(2))
        emitted += [t for t, _ in new]
    drafter = decoder.drafter.rows[0]
    history = PROMPT + emitted[:-1]
    assert decoder.last == emitted[-1]
    features = draft.fused(target.model(mx.array([history]), None, tuple(draft.args.feature_layers or ())))
    embed = target.model.embed_tokens
    fresh = draft(features, embed(mx.array([history[1:] + [decoder.last]])))[:, -1]
    pending = draft.fused(mx.concatenate(drafter.features, axis=1))
    cached = draft(pending, embed(mx.array([drafter.tokens + [decoder.last]])), drafter.cache)[:, -1]
    assert mx.abs(fresh - cached).max().item() < 1e-4


@pytest.mark.parametrize("params", [SamplingParams(1.0), full_only(SamplingParams(0.7, top_p=0.9))])
def test_sampled_feature_speculation_has_the_target_distribution(params):
    target = one_block_target(12, vocab=6, window=None)
    draft = feature_draft(target, 13, head_vocab=4)  # two tokens it can never propose
    stat, df = sampled_chi2(target, draft, params, [1, 2, 3], length=3, k=2)
    assert stat < chi2_critical(df), (stat, df)


def save(draft: FeatureDraft, folder, **overrides) -> None:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**draft_config(draft), **overrides}))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(draft.parameters())))


def test_load_feature_draft(tmp_path):
    draft = FEATURE_DRAFTS["random"]
    save(draft, tmp_path / "d")
    loaded = load_draft(tmp_path / "d", TARGET, None)
    assert isinstance(loaded, FeatureDraft)
    x = mx.random.normal((1, 5, TARGET.args.hidden_size))
    assert mx.array_equal(loaded(x, x), draft(x, x))
    assert mx.array_equal(loaded.token_ids, draft.token_ids)
    bigger = feature_draft(tiny(40, vocab=80, layers=1), 41)
    save(bigger, tmp_path / "other")
    with pytest.raises(InputError, match="vocab_size 80"):
        load_draft(tmp_path / "other", TARGET, None)
    save(FEATURE_DRAFTS["fused"], tmp_path / "fused")
    fused = load_draft(tmp_path / "fused", DEEP, None)
    assert fused.args.feature_layers == [0, 1] and mx.array_equal(fused.fuse.weight, FEATURE_DRAFTS["fused"].fuse.weight)
    with pytest.raises(InputError, match="reads block 1 of its target"):
        load_draft(tmp_path / "fused", tiny(40, vocab=64, layers=1, window=None), None)
    for bad in ([1, 0], [], [-1], "0", [0.5]):
        save(draft, tmp_path / f"bad{bad!s}", feature_layers=bad)
        with pytest.raises(ConfigError, match="feature_layers must be"):
            load_draft(tmp_path / f"bad{bad!s}", TARGET, None)
    save(draft, tmp_path / "unknown", draft_type="medusa")
    with pytest.raises(ConfigError, match="unknown draft_type 'medusa'"):
        load_draft(tmp_path / "unknown", TARGET, None)
    assert draft_config(draft)["draft_type"] == DRAFT_TYPE
