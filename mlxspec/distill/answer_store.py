"""How answered batches are kept on disk and read back without holding them in memory.

Batch g of a folder is two files: `{g:05d}.features.npy` (float16 [rows, seq_len, width])
and `{g:05d}.npz` (tokens, valid mask), the second written last, so its presence says the
batch is complete. Features are read memory-mapped: the answers to a few thousand prompts
by a 7B target run to tens of GB with its tapped blocks, far more than a 16 GB Mac holds
beside the target, and a training step reads only its own rows. Batches written whole into
the `.npz` (earlier mlxspec) are split once when first read.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..reading import regular_file


class Rows:
    """Several arrays' rows read as one array's: `rows[idx]` stacks the rows `idx` (in that
    order), iteration yields every row; nothing is read before it is asked for. With
    `columns`, only those entries of the last axis are given."""

    def __init__(self, parts: list[np.ndarray], columns: np.ndarray | None = None) -> None:
        self.parts, self.columns = parts, columns
        self.starts = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_1d(idx)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        return np.stack([self._row(self.parts[p][i - self.starts[p]]) for p, i in zip(part, idx)])

    def __iter__(self) -> Iterator[np.ndarray]:
        for part in self.parts:
            yield from map(self._row, part)

    def _row(self, row: np.ndarray) -> np.ndarray:
        return row if self.columns is None else row[..., self.columns]


def is_done(folder: Path, g: int) -> bool:
    """Whether batch `g` was written completely."""
    return (folder / f"{g:05d}.npz").is_file()


def intact(folder: Path, g: int, shape: tuple[int, int, int], vocab: int) -> bool:
    """Whether batch `g` reads back as it was written: tokens in 0..vocab-1 and a valid mask
    of [rows, seq_len], features of `shape` [rows, seq_len, width]. A cache damaged on disk
    (truncated, edited, replaced) is answered again, never read into a crash."""
    files = [folder / f"{g:05d}.npz", folder / f"{g:05d}.features.npy"]
    try:
        regular_file(files[0])
        with np.load(files[0]) as batch:
            tokens, valid = batch["tokens"], batch["valid"]
            whole = batch["features"].shape if "features" in batch.files else None  # an earlier mlxspec's
        if whole is None:
            regular_file(files[1])
        features = whole or np.load(files[1], mmap_mode="r").shape
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    return (tuple(features) == shape and tokens.shape == valid.shape == shape[:2]
            and np.issubdtype(tokens.dtype, np.integer) and (tokens.size == 0 or 0 <= tokens.min() <= tokens.max() < vocab))


def discard(folder: Path, g: int) -> None:
    """Remove the files of batch `g` (before it is answered again)."""
    for file in folder.glob(f"{g:05d}.*"):
        if file.is_symlink() or not file.is_dir():
            file.unlink()


def write_batch(folder: Path, g: int, data: dict[str, np.ndarray]) -> None:
    """Batch `g`: its features (unless None: kept), then tokens and valid mask (each written
    whole, then renamed)."""
    if data["features"] is not None:
        np.save(folder / f"{g:05d}.features.tmp.npy", data["features"])
        (folder / f"{g:05d}.features.tmp.npy").replace(folder / f"{g:05d}.features.npy")
    np.savez(folder / f"{g:05d}.tmp.npz", tokens=data["tokens"], valid=data["valid"])
    (folder / f"{g:05d}.tmp.npz").replace(folder / f"{g:05d}.npz")


def done_batches(folder: Path) -> int:
    """How many batches in `folder` were written completely."""
    return sum(1 for _ in folder.glob("[0-9][0-9][0-9][0-9][0-9].npz"))


def read_batches(folder: Path, count: int, columns: np.ndarray | None = None) -> dict:
    """The complete batches among the first `count`: tokens and valid masks concatenated,
    features as memory-mapped `Rows` (of `columns` only, if given), and how many batches
    there were."""
    tokens, valid, features = [], [], []
    for g in range(count):
        if not is_done(folder, g):
            continue
        features_file = folder / f"{g:05d}.features.npy"
        with np.load(folder / f"{g:05d}.npz") as batch_file:  # closed at once: a run has hundreds
            tokens.append(batch_file["tokens"])
            valid.append(batch_file["valid"])
            whole = not features_file.is_file()  # written whole by an earlier mlxspec
            if whole:
                np.save(folder / f"{g:05d}.features.tmp.npy", batch_file["features"])
                (folder / f"{g:05d}.features.tmp.npy").replace(features_file)
        if whole:
            write_batch(folder, g, {"tokens": tokens[-1], "valid": valid[-1], "features": None})
        features.append(np.load(features_file, mmap_mode="r"))
    if not tokens:
        return {}
    return {"tokens": np.concatenate(tokens), "valid": np.concatenate(valid), "features": Rows(features, columns),
            "batches": len(tokens)}
