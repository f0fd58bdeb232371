"""Streaming safetensors I/O: read one tensor at a time from a file's header offsets,
and write shards whose memory cost is one tensor, not one shard.

Format: 8-byte little-endian header length, a JSON header mapping names to
{dtype, shape, data_offsets}, then the raw little-endian tensor bytes."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Iterator

import mlx.core as mx
import numpy as np

from mlxspec.errors import CheckpointError

# safetensors dtype -> (numpy dtype used to read the bytes, mlx dtype to view them as)
_DTYPES: dict[str, tuple[np.dtype, mx.Dtype]] = {
    "F32": (np.dtype("<f4"), mx.float32),
    "F16": (np.dtype("<f2"), mx.float16),
    "BF16": (np.dtype("<u2"), mx.bfloat16),
    "U32": (np.dtype("<u4"), mx.uint32),
    "I32": (np.dtype("<i4"), mx.int32),
    "U8": (np.dtype("u1"), mx.uint8),
    "I8": (np.dtype("i1"), mx.int8),
    "I64": (np.dtype("<i8"), mx.int64),
}
_NAMES = {mx_dtype: name for name, (_, mx_dtype) in _DTYPES.items()}
_NP_NAMES = {np_dtype: name for name, (np_dtype, _) in _DTYPES.items() if name != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsReader:
    """Header of one safetensors file, validated against the file size; tensors on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            with path.open("rb") as f:
                raw = f.read(8)
                if len(raw) < 8:
                    raise CheckpointError(f"{path}: truncated safetensors file (no header)")
                (n,) = struct.unpack("<Q", raw)
                if n > min(size - 8, _MAX_HEADER):
                    raise CheckpointError(f"{path}: corrupt or truncated safetensors header")
                header = json.loads(f.read(n))
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt safetensors header") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self.header: dict[str, dict] = header
        self._data_start = 8 + n
        for name, info in header.items():
            begin, end = info["data_offsets"]
            if self._data_start + end > size:
                raise CheckpointError(f"{path}: truncated (tensor {name!r} runs past the end of the file)")
            if info["dtype"] not in _DTYPES:
                raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
            expected = int(np.prod(info["shape"], dtype=np.int64)) * _DTYPES[info["dtype"]][0].itemsize
            if end - begin != expected:
                raise CheckpointError(f"{path}: tensor {name!r} holds {end - begin} bytes, shape implies {expected}")

    def names(self) -> list[str]:
        """Tensor names in file order."""
        return sorted(self.header, key=lambda k: self.header[k]["data_offsets"][0])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def nbytes(self, name: str) -> int:
        begin, end = self.header[name]["data_offsets"]
        return end - begin

    def read(self, name: str) -> mx.array:
        """Load one tensor into memory as an mlx array of its stored dtype."""
        info = self.header[name]
        np_dtype, mx_dtype = _DTYPES[info["dtype"]]
        begin, _ = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        data = np.fromfile(self.path, dtype=np_dtype, count=count, offset=self._data_start + begin)
        if data.size != count:
            raise CheckpointError(f"{self.path}: truncated while reading tensor {name!r}")
        arr = mx.array(data.reshape(info["shape"]))
        return arr.view(mx_dtype) if mx_dtype == mx.bfloat16 else arr


def _raw_bytes(arr: mx.array) -> bytes:
    if arr.dtype == mx.bfloat16:
        arr = arr.view(mx.uint16)
    return np.ascontiguousarray(np.array(arr)).tobytes()


class ShardedWriter:
    """Writes tensors into shards of at most `max_shard_bytes`, mlx-lm style names
    (`model.safetensors`, or `model-0000i-of-0000n.safetensors` + index).

    Tensor bytes go straight to a spool file; the header is written when a shard is
    closed, so memory holds only the tensor being written."""

    def __init__(self, out_dir: Path, max_shard_bytes: int = 2 * 1024**3, metadata: dict[str, str] | None = None) -> None:
        self.out_dir = out_dir
        self.metadata = metadata or {"format": "mlx"}
        self.max_shard_bytes = max_shard_bytes
        self._shards: list[tuple[Path, list[str]]] = []
        self._spool: object | None = None
        self._entries: dict[str, dict] = {}
        self._offset = 0
        self.total_bytes = 0

    def add(self, name: str, arr: mx.array | np.ndarray) -> None:
        """Append one tensor (evaluated now) to the current shard."""
        if isinstance(arr, np.ndarray):
            dtype = _NP_NAMES[arr.dtype.newbyteorder("<")]
            data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        else:
            dtype, data = _NAMES[arr.dtype], _raw_bytes(arr)
        if self._spool is not None and self._offset and self._offset + len(data) > self.max_shard_bytes:
            self._close_shard()
        if self._spool is None:
            self._spool = (self.out_dir / f".shard-{len(self._shards)}.spool").open("wb")
        self._spool.write(data)
        self._entries[name] = {
            "dtype": dtype, "shape": list(arr.shape),
            "data_offsets": [self._offset, self._offset + len(data)],
        }
        self._offset += len(data)
        self.total_bytes += len(data)

    def _close_shard(self) -> None:
        spool_path = Path(self._spool.name)
        self._spool.close()
        final = self.out_dir / f".shard-{len(self._shards)}.safetensors"
        header = json.dumps({"__metadata__": self.metadata, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        with final.open("wb") as out, spool_path.open("rb") as spool:
            out.write(struct.pack("<Q", len(header)))
            out.write(header)
            shutil.copyfileobj(spool, out, 16 * 1024 * 1024)
        spool_path.unlink()
        self._shards.append((final, list(self._entries)))
        self._spool, self._entries, self._offset = None, {}, 0

    def finish(self) -> list[Path]:
        """Close the last shard, give shards their final names and write the index."""
        if self._spool is not None:
            self._close_shard()
        n = len(self._shards)
        paths, weight_map = [], {}
        for i, (tmp, names) in enumerate(self._shards, 1):
            name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(tmp, self.out_dir / name)
            paths.append(self.out_dir / name)
            weight_map.update({k: name for k in names})
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return paths


def iter_tensors(files: list[Path]) -> Iterator[tuple[SafetensorsReader, str]]:
    """(reader, name) for every tensor of `files`, validating each header first."""
    readers = [SafetensorsReader(f) for f in files]
    for reader in readers:
        for name in reader.names():
            yield reader, name
