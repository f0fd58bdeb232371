"""The distillation answers on disk: batches read back memory-mapped, rows in the order
asked, incomplete batches skipped, batches an earlier mlxspec wrote whole split once, and
answers holding more tapped blocks reused for a draft reading fewer."""

from __future__ import annotations

import numpy as np

from mlxspec.distill.answer_store import read_batches, write_batch
from mlxspec.distill.answers import answers_folder, tap_columns


def batch(seed: int, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"tokens": rng.integers(0, 100, (rows, 6)).astype(np.int32), "valid": np.ones((rows, 6), np.float32),
            "features": rng.standard_normal((rows, 6, 4)).astype(np.float16)}


def test_rows_come_back_as_written(tmp_path):
    parts = [batch(0, 3), batch(1, 2), batch(2, 4)]
    write_batch(tmp_path, 0, parts[0])
    np.savez(tmp_path / "00001.npz", **parts[1])  # an earlier mlxspec: the features inside the npz
    write_batch(tmp_path, 2, parts[2])
    write_batch(tmp_path, 3, batch(3, 1))
    (tmp_path / "00003.npz").unlink()  # killed before the batch was complete
    data = read_batches(tmp_path, 4)
    every = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    assert data["batches"] == 3 and len(data["features"]) == 9
    assert np.array_equal(data["tokens"], every["tokens"]) and np.array_equal(data["valid"], every["valid"])
    idx = np.array([8, 0, 4, 3])
    assert np.array_equal(data["features"][idx], every["features"][idx])
    assert np.array_equal(np.stack(list(data["features"])), every["features"])
    with np.load(tmp_path / "00001.npz") as split:  # split once: the npz keeps tokens and mask only
        assert sorted(split.files) == ["tokens", "valid"]
    again = read_batches(tmp_path, 4)
    assert np.array_equal(again["features"][idx], every["features"][idx])


def test_answers_with_more_blocks_serve_a_draft_reading_fewer(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"x")
    prompts, settings = ["a", "b"], {"batch": 2, "seed": 0}
    (tmp_path / "distill-answers" / "torn").mkdir(parents=True)
    (tmp_path / "distill-answers" / "torn" / "key.json").write_text('{"identity": ')  # not shared, not fatal
    wide, held = answers_folder(tmp_path, target, prompts, settings, (1, 3, 5))
    assert held == (1, 3, 5)
    d = 2  # final states, then blocks 1, 3, 5: each d wide, numbered by the block
    features = np.concatenate([np.full((1, 1, d), b, np.float16) for b in (9, 1, 3, 5)], axis=-1)
    write_batch(wide, 0, {"tokens": np.zeros((1, 1), np.int32), "valid": np.ones((1, 1), np.float32),
                          "features": features})
    for wanted in [(), (5,), (1, 5), (1, 3, 5)]:
        place, stored = answers_folder(tmp_path, target, prompts, settings, wanted)
        assert (place, stored) == (wide, (1, 3, 5))
        row = read_batches(place, 1, tap_columns(stored, wanted, d))["features"][np.array([0])]
        assert row.reshape(-1).tolist() == [b for b in (9, *wanted) for _ in range(d)]
    for other in [((2,), settings), ((1,), {**settings, "seed": 1}), ((), {**settings, "batch": 3})]:
        assert answers_folder(tmp_path, target, prompts, other[1], other[0])[0] != wide  # not held, or other data
    (target / "model.safetensors").write_bytes(b"xy")  # a changed target answers again
    assert answers_folder(tmp_path, target, prompts, settings, ())[0] != wide
