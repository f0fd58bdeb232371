"""An adapter folder as mlx-lm's trainer writes it (`mlx_lm.lora`), read and checked before
any model is loaded: `adapter_config.json` (fine_tune_type lora | dora | full, num_layers,
lora_parameters {rank, scale, dropout, keys}) and `adapters.safetensors` (for lora and dora
only `*.lora_a`, `*.lora_b` and DoRA's `*.m`; for full, the trained parameters themselves).

Every problem is one line naming the file and what is wrong. The adapter's identity (a
digest of the weights file and the configuration) keys what is measured or cached for a
model carrying it."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..convert.safetensors_io import SafetensorsReader
from ..errors import CheckpointError, ConfigError, InputError, InputTypeError
from ..models.config import read_json
from ..validate import is_int

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapters.safetensors"
FINE_TUNE_TYPES = ("lora", "dora", "full")
ADAPTER_LEAVES = {"lora": ("lora_a", "lora_b"), "dora": ("lora_a", "lora_b", "m")}


@dataclass(frozen=True)
class Adapter:
    """A checked adapter folder: what to build (`fine_tune_type`, the last `num_layers`
    blocks, -1 or 0 for all, as mlx-lm reads it; `rank`, `scale`, `keys` for lora and dora)
    and the tensors `adapters.safetensors` holds (name -> shape), read from its header;
    `digest` tells it from any other adapter (and a model with it from one without)."""

    folder: Path
    fine_tune_type: str
    num_layers: int | None
    rank: int | None
    scale: float | None
    keys: tuple[str, ...] | None
    shapes: dict[str, tuple[int, ...]]
    digest: str

    @property
    def config_file(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def weights_file(self) -> Path:
        return self.folder / WEIGHTS_FILE

    def adapted_modules(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """lora/dora: module path -> {leaf: shape} of the tensors adapting it."""
        modules: dict[str, dict[str, tuple[int, ...]]] = {}
        for name, shape in self.shapes.items():
            path, leaf = name.rsplit(".", 1)
            modules.setdefault(path, {})[leaf] = shape
        return modules


def _folder(path: str | Path) -> Path:
    """The adapter folder `path` names (the folder itself, as mlx-lm's `--adapter-path`)."""
    if not isinstance(path, (str, Path)):
        raise InputTypeError(f"adapter must be the path of an adapter folder, got {type(path).__name__}")
    if not str(path).strip():
        raise InputError("the adapter path is empty")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise InputError(f"{folder}: no such adapter folder")
    if not folder.is_dir():
        raise InputError(f"{folder}: an adapter is a folder holding {CONFIG_FILE} and {WEIGHTS_FILE} "
                         "(as mlx_lm.lora writes it), not a file")
    return folder


def _lora_parameters(config: dict[str, Any], where: Path) -> tuple[int, float, tuple[str, ...] | None]:
    """(rank, scale, keys) of `lora_parameters`, each checked for type and range."""
    params = config.get("lora_parameters")
    if not isinstance(params, dict):
        raise ConfigError(f"{where}: lora_parameters must be an object with rank and scale, got {params!r}")
    rank, scale, keys = params.get("rank"), params.get("scale"), params.get("keys")
    if not is_int(rank) or rank < 1:
        raise ConfigError(f"{where}: lora_parameters.rank must be a positive integer, got {rank!r}")
    if scale is None and "alpha" in params:
        raise ConfigError(f"{where}: lora_parameters has 'alpha' but no 'scale' (mlx-lm's LoRA uses scale)")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ConfigError(f"{where}: lora_parameters.scale must be a finite number, got {scale!r}")
    dropout = params.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"{where}: lora_parameters.dropout must be a number in [0, 1), got {dropout!r}")
    if keys is not None and (not isinstance(keys, list) or not keys
                             or not all(isinstance(k, str) and k for k in keys)):
        raise ConfigError(f"{where}: lora_parameters.keys must be a non-empty list of module names, got {keys!r}")
    return rank, float(scale), None if keys is None else tuple(keys)


def _check_tensors(kind: str, reader: SafetensorsReader, rank: int | None, where: Path) -> None:
    """Floating-point tensors; for lora/dora only adapter leaves, each module with all of its
    own, of rank `rank`."""
    shapes = {name: reader.shape(name) for name in reader.names()}
    if not shapes:
        raise CheckpointError(f"{where}: holds no tensors")
    for name in shapes:
        if reader.header[name]["dtype"] not in ("F16", "BF16", "F32", "F64") and kind != "full":
            raise CheckpointError(f"{where}: tensor {name!r} is {reader.header[name]['dtype']}, not floating point")
    if kind == "full":
        return
    leaves = ADAPTER_LEAVES[kind]
    modules: dict[str, set[str]] = {}
    for name in shapes:
        path, _, leaf = name.rpartition(".")
        if leaf not in leaves or not path:
            raise CheckpointError(f"{where}: tensor {name!r} is not a {kind} parameter ({', '.join(leaves)})")
        modules.setdefault(path, set()).add(leaf)
    for path, have in sorted(modules.items()):
        missing = [leaf for leaf in leaves if leaf not in have]
        if missing:
            raise CheckpointError(f"{where}: {path!r} has no {missing[0]!r} tensor")
        a, b = shapes[f"{path}.lora_a"], shapes[f"{path}.lora_b"]
        if len(a) not in (2, 3) or len(b) != len(a) or _rank_of(a, b) != rank:
            raise CheckpointError(f"{where}: {path!r} has lora_a {a} and lora_b {b}, not of rank {rank}")


def _rank_of(a: tuple[int, ...], b: tuple[int, ...]) -> int | None:
    """The rank a (lora_a, lora_b) pair of shapes holds: [in, r] @ [r, out], or per expert
    [E, r, in] and [E, out, r]; None when they do not fit together."""
    if len(a) == 2 and a[1] == b[0]:
        return a[1]
    if len(a) == 3 and a[0] == b[0] and a[1] == b[2]:
        return a[1]
    return None


def _digest(config: dict[str, Any], weights: Path) -> str:
    """sha256 of the canonical configuration and the weights file's bytes (first 16 hex)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    try:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise CheckpointError(f"cannot read {weights}: {exc.strerror}") from None
    return h.hexdigest()[:16]


def read_adapter(path: str | Path | Adapter) -> Adapter:
    """The adapter folder at `path`, checked (see the module docstring); no tensor is loaded.
    An `Adapter` already checked is returned as it is."""
    if isinstance(path, Adapter):
        return path
    folder = _folder(path)
    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_file.is_file():
        raise ConfigError(f"{config_file}: missing (an mlx-lm adapter folder holds {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = read_json(config_file)
    kind = config.get("fine_tune_type", "lora")
    if kind not in FINE_TUNE_TYPES:
        raise ConfigError(f"{config_file}: unknown fine_tune_type {kind!r} (lora, dora or full)")
    num_layers = config.get("num_layers", config.get("lora_layers"))  # the older mlx-lm's name
    if not (num_layers is None and kind == "full") and (not is_int(num_layers) or num_layers < -1):
        raise ConfigError(f"{config_file}: num_layers must be an integer >= -1 (-1: every block), got {num_layers!r}")
    rank = scale = keys = None
    if kind != "full":
        rank, scale, keys = _lora_parameters(config, config_file)
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file}: missing (the adapter's weights, as mlx_lm.lora saves them)")
    reader = SafetensorsReader(weights_file)  # one CheckpointError naming the file for a bad header
    _check_tensors(kind, reader, rank, weights_file)
    shapes = {name: reader.shape(name) for name in reader.names()}
    return Adapter(folder, kind, num_layers, rank, scale, keys, shapes, _digest(config, weights_file))


def check_full_tensors(adapter: Adapter, shapes: dict[str, tuple[int, ...]], whose: str, hint: str = "") -> None:
    """A full fine-tune's tensors must name tensors of `shapes` (the model's, or a source's:
    `whose`) and have their shapes; `CheckpointError` naming the adapter's file otherwise."""
    for name, shape in adapter.shapes.items():
        if name not in shapes:
            raise CheckpointError(f"{adapter.weights_file}: tensor {name!r} names no tensor of {whose}")
        if tuple(shapes[name]) != shape:
            raise CheckpointError(f"{adapter.weights_file}: tensor {name!r} has shape {shape}, "
                                  f"{whose}'s {tuple(shapes[name])}{hint}")
