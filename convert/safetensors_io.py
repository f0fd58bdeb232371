"""Streaming safetensors I/O: read one tensor at a time from a file's header offsets,
and write shards whose memory cost is one tensor, not one shard.

Format: 8-byte little-endian header length, a JSON header mapping names to
{dtype, shape, data_offsets}, then the raw little-endian tensor bytes."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

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
        self._lazy: dict[str, mx.array] | None = None
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
        """One tensor as an mlx array of its stored dtype. MLX maps the file lazily: only
        this tensor's bytes are read, when it is evaluated (the header was validated above)."""
        if self._lazy is None or name not in self._lazy:
            try:
                self._lazy = mx.load(str(self.path))
            except Exception as exc:  # MLX raises bare RuntimeError for unreadable files
                raise CheckpointError(f"{self.path}: unreadable safetensors file ({exc})") from None
        # hand the array over: kept here, every tensor read would stay resident
        return self._lazy.pop(name)


def _raw_bytes(arr: mx.array) -> memoryview:
    """The array's bytes without a copy where it is contiguous (bf16 viewed as uint16)."""
    if arr.dtype == mx.bfloat16:
        arr = arr.view(mx.uint16)
    mx.eval(arr)
    view = memoryview(arr)
    return view if view.c_contiguous else memoryview(np.ascontiguousarray(arr))


class ShardedWriter:
    """Writes tensors into shards of at most `max_shard_bytes`, mlx-lm style names
    (`model.safetensors`, or `model-0000i-of-0000n.safetensors` + index).

    Each shard starts with a reserved header region (room for `max_tensors` entries);
    tensor bytes are written straight after it as they come, and the real header,
    padded with spaces as the format allows, fills the region when the shard closes.
    Memory holds only the tensor being written and nothing is copied twice."""

    ENTRY_BYTES = 320  # generous bound on one header entry: name, dtype, shape, offsets

    def __init__(self, out_dir: Path, max_shard_bytes: int = 2 * 1024**3, metadata: dict[str, str] | None = None,
                 max_tensors: int = 4096) -> None:
        self.out_dir = out_dir
        self.metadata = metadata or {"format": "mlx"}
        self.max_shard_bytes = max_shard_bytes
        self.reserve = 256 + self.ENTRY_BYTES * max_tensors
        self.reserve += -self.reserve % 8
        self._shards: list[tuple[Path, list[str]]] = []
        self._file = None
        self._entries: dict[str, dict] = {}
        self._offset = 0
        self.total_bytes = 0

    def add(self, name: str, arr: mx.array | np.ndarray) -> None:
        """Append one tensor (evaluated now) to the current shard."""
        if isinstance(arr, np.ndarray):
            dtype = _NP_NAMES[arr.dtype.newbyteorder("<")]
            data = memoryview(np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")))
        else:
            dtype, data = _NAMES[arr.dtype], _raw_bytes(arr)
        size = data.nbytes
        if self._file is not None and self._offset and self._offset + size > self.max_shard_bytes:
            self._close_shard()
        if self._file is None:
            self._file = (self.out_dir / f".shard-{len(self._shards)}.safetensors").open("wb")
            self._file.seek(8 + self.reserve)
        self._file.write(data)
        self._entries[name] = {"dtype": dtype, "shape": list(arr.shape),
                               "data_offsets": [self._offset, self._offset + size]}
        self._offset += size
        self.total_bytes += size

    def _close_shard(self) -> None:
        header = json.dumps({"__metadata__": self.metadata, **self._entries}, separators=(",", ":")).encode()
        if len(header) > self.reserve:
            raise CheckpointError(f"{self._file.name}: header needs {len(header)} bytes, {self.reserve} reserved "
                                  "(more tensors than max_tensors)")
        self._file.seek(0)
        self._file.write(struct.pack("<Q", self.reserve))
        self._file.write(header + b" " * (self.reserve - len(header)))
        self._file.close()
        self._shards.append((Path(self._file.name), list(self._entries)))
        self._file, self._entries, self._offset = None, {}, 0

    def finish(self) -> list[Path]:
        """Close the last shard, give shards their final names and write the index."""
        if self._file is not None:
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
