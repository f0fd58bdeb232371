"""What identifies the model a pipeline rank was given, cheaply: ranks that compare only
shapes run two checkpoints of one architecture (another seed, another fine-tune) as if they
were one, and rank 0 then prints text no single process would.

The digest covers the whole checkpoint, not just the rank's blocks, so every rank computes
the same value from its own copy: the configuration, the load options (dtype, dequantize),
and for every tensor its name, dtype, shape and a few evenly spaced runs of its bytes, read
from the files at their offsets (512 bytes a tensor, whatever the model's size). A trained
or fine-tuned tensor differs nearly everywhere, so the samples see it; two checkpoints
that differ in a handful of values may not be told apart.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

import mlx.core as mx

from ..convert.safetensors_io import SafetensorsReader
from ..errors import CheckpointError
from ..load import weight_files
from ..models.config import load_model_args

SAMPLES = 8  # runs of bytes read from each tensor
SAMPLE_BYTES = 64
WORDS = 4  # int64 words the digest is exchanged as


def weights_digest(model_dir: Path, dtype: mx.Dtype | None, dequantize: bool) -> bytes:
    """A 32-byte digest of the model in `model_dir` as loaded with `dtype` and `dequantize`."""
    config = json.dumps(asdict(load_model_args(model_dir)), sort_keys=True, default=str)
    digest = hashlib.sha256(json.dumps([config, str(dtype), dequantize]).encode())
    files, _ = weight_files(model_dir)
    entries = []
    for path in files:
        reader = SafetensorsReader(path)  # a header the file cannot hold raises CheckpointError
        try:
            with path.open("rb") as f:
                start = 8 + struct.unpack("<Q", f.read(8))[0]  # the tensors' offsets count from the header's end
                for name in reader.names():
                    begin, end = reader.header[name]["data_offsets"]
                    entries.append((name, reader.header[name]["dtype"], reader.shape(name),
                                    _samples(f, start + begin, start + end)))
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    for name, dtype_name, shape, samples in sorted(entries):
        digest.update(json.dumps([name, dtype_name, shape]).encode() + samples)
    return digest.digest()


def _samples(f: BinaryIO, begin: int, end: int) -> bytes:
    """`SAMPLES` runs of `SAMPLE_BYTES` spread evenly over [begin, end) (first and last
    included), or all of it when that is shorter."""
    size = end - begin
    if size <= SAMPLES * SAMPLE_BYTES:
        f.seek(begin)
        return f.read(size)
    runs = []
    for i in range(SAMPLES):
        f.seek(begin + i * (size - SAMPLE_BYTES) // (SAMPLES - 1))
        runs.append(f.read(SAMPLE_BYTES))
    return b"".join(runs)


def as_words(digest: bytes) -> list[int]:
    """The digest as `WORDS` signed 64-bit integers (what the ranks exchange)."""
    return [int.from_bytes(digest[8 * i: 8 * i + 8], "little", signed=True) for i in range(WORDS)]


def shown(words: list[int]) -> str:
    """The start of a digest given as words, in hex, for a message."""
    return b"".join(int(w).to_bytes(8, "little", signed=True) for w in words).hex()[:12]
