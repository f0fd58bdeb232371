"""Streaming safetensors I/O: read one tensor at a time from a file's header offsets,
and write shards whose memory cost is one tensor, not one shard.

Format: 8-byte little-endian header length, a JSON header mapping names to
{dtype, shape, data_offsets}, then the raw little-endian tensor bytes."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlxspec.errors import CheckpointError
from mlxspec.reading import regular_file
from mlxspec.standard_streams import reopen_closed_descriptors
from mlxspec.validate import is_int

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
    "U64": (np.dtype("<u8"), mx.uint64),  # an optimizer's step count (distill's checkpoints)
}
_NAMES = {mx_dtype: name for name, (_, mx_dtype) in _DTYPES.items()}
_NP_NAMES = {np_dtype: name for name, (np_dtype, _) in _DTYPES.items() if name != "BF16"}
_MAX_HEADER = 100 * 1024 * 1024
_MAX_DIM = 2**31 - 1  # MLX shapes are int32


class SafetensorsReader:
    """Header of one safetensors file, validated against the file size; tensors on demand.

    Every header value is checked for type and range before use (a JSON object of entries,
    each a supported dtype, a list of dimensions and [begin, end] offsets inside the file
    that match the shape), so a lying header gives one `CheckpointError`, never an exception
    of another kind or an allocation larger than the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        header, self._data_start, size = _read_header(path)
        self.metadata: dict[str, str] = _check_metadata(path, header.pop("__metadata__", None))
        for name, info in header.items():
            _check_entry(path, name, info, size - self._data_start)
        _check_no_overlap(path, header)
        self._lazy: dict[str, mx.array] | None = None
        self.header: dict[str, dict] = header

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
            reopen_closed_descriptors()  # else the file may open as descriptor 0, which MLX reads as stdin
            try:
                self._lazy = mx.load(str(self.path))
            except Exception as exc:  # MLX raises bare RuntimeError for unreadable files
                raise CheckpointError(f"{self.path}: unreadable safetensors file ({exc})") from None
        # hand the array over: kept here, every tensor read would stay resident
        arr = self._lazy.pop(name, None)
        if arr is None or tuple(arr.shape) != self.shape(name):  # MLX read the header otherwise
            raise CheckpointError(f"{self.path}: MLX reads tensor {name!r} differently from its header")
        return arr


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """(header object, offset of the tensor data, file size); never reads past the file."""
    try:
        size = regular_file(path)  # a pipe would block the open
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file (no header)")
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, _MAX_HEADER):
                raise CheckpointError(f"{path}: corrupt or truncated safetensors header")
            text = f.read(n).decode("utf-8")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: corrupt safetensors header (not UTF-8 text)") from None
    try:
        header = json.loads(text, object_pairs_hook=lambda pairs: _unique(path, pairs))
    except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, deep nesting
        raise CheckpointError(f"{path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {type(header).__name__}, not an object)")
    return header, 8 + n, size


def _unique(path: Path, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        names = [k for k, _ in pairs]
        twice = next(k for k in names if names.count(k) > 1)
        raise CheckpointError(f"{path}: corrupt safetensors header ({twice!r} appears twice)")
    return obj


def _check_metadata(path: Path, metadata: Any) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: __metadata__ must map names to strings, got {_show(metadata)}")
    return metadata


def _check_entry(path: Path, name: str, info: Any, data_size: int) -> None:
    """One tensor entry: types and ranges, inside the data section, bytes matching the shape."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where} has entry {_show(info)}, not a JSON object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise CheckpointError(f"{where} has unsupported dtype {_show(dtype)} (supported: {', '.join(_DTYPES)})")
    if not isinstance(shape, list) or not all(is_int(d) and 0 <= d <= _MAX_DIM for d in shape):
        raise CheckpointError(f"{where} has shape {_show(shape)}, not a list of dimensions in 0..{_MAX_DIM}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(is_int, offsets))
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where} has data_offsets {_show(offsets)}, not [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    if end > data_size:
        raise CheckpointError(f"{path}: truncated (tensor {name!r} runs past the end of the file)")
    expected = math.prod(shape) * _DTYPES[dtype][0].itemsize
    if end - begin != expected:
        raise CheckpointError(f"{where} holds {end - begin} bytes, shape implies {expected}")


def _check_no_overlap(path: Path, header: dict[str, dict]) -> None:
    spans = sorted((info["data_offsets"], name) for name, info in header.items())
    for (before, first), (after, second) in zip(spans, spans[1:]):
        if after[0] < before[1]:
            raise CheckpointError(f"{path}: tensors {first!r} and {second!r} overlap")



def _show(value: Any) -> str:
    """A value for an error message, cut short (headers can hold anything)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


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
