"""The weights digest pipeline ranks compare: the same model gives the same digest however
its files are sharded; other weights of the same shape, or other load options, another."""

from __future__ import annotations

import mlx.core as mx

from mlxspec.models import ModelArgs
from mlxspec.pipeline.digest import as_words, shown, weights_digest
from synthetic import write_random_hf_checkpoint

ARGS = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=256, sliding_window=None)


def test_the_digest_names_the_weights_not_the_files(tmp_path):
    one = weights_digest(write_random_hf_checkpoint(tmp_path / "one", ARGS, seed=1), None, False)
    sharded = weights_digest(write_random_hf_checkpoint(tmp_path / "sharded", ARGS, seed=1, shard_bytes=40_000),
                             None, False)
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    assert one == sharded
    assert weights_digest(write_random_hf_checkpoint(tmp_path / "seed2", ARGS, seed=2), None, False) != one
    assert weights_digest(tmp_path / "one", mx.float16, False) != one


def test_a_change_in_any_one_tensor_changes_the_digest(tmp_path):
    folder = write_random_hf_checkpoint(tmp_path / "model", ARGS, seed=1)
    before = weights_digest(folder, None, False)
    weights = mx.load(str(folder / "model.safetensors"))
    mx.eval(weights)  # read before the file is written over
    for name in sorted(weights):
        changed = {**weights, name: weights[name] * 1.01}
        mx.save_safetensors(str(folder / "model.safetensors"), changed, metadata={"format": "pt"})
        assert weights_digest(folder, None, False) != before, name
    assert shown(as_words(before)) == before.hex()[:12]
