"""The distillation answers on disk: batches read back memory-mapped, rows in the order
asked, incomplete batches skipped, and batches an earlier mlxspec wrote whole split once."""

from __future__ import annotations

import numpy as np

from mlxspec.distill.answer_store import read_batches, write_batch


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
