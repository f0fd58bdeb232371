"""Reading what a plan needs from where a model is named: a local folder (mlxspec/mlx-lm MLX
layout, HF safetensors, Mistral's params.json + consolidated), a feature draft's folder, a GGUF
file (its header), a pair folder (pair.json), or a Hub repo id (its metadata, `hub_metadata`).
Only configs and headers are read, never a weight."""

from __future__ import annotations

from pathlib import Path

from ..convert.gguf import ROPE_FREQS, read_header
from ..convert.gguf_config import model_args as gguf_model_args
from ..convert.safetensors_io import SafetensorsReader
from ..drafts import KINDS
from ..errors import ConfigError
from ..hub import is_repo_id
from ..load import read_pair_manifest, weight_files
from ..load_mlx_lm import known_to_mlx_lm, unknown_architecture
from ..models.config import load_model_args, port_supports, read_json
from ..models.families import FAMILIES
from ..paths import user_path
from .hub_metadata import hub_model
from .shape import ModelShape, Tensor, from_args, from_config


def read_model(name: str | Path) -> ModelShape:
    """The shape and stored tensors of the model `name` names (a folder, a .gguf file, a Hub id)."""
    path = user_path(name, "model path")
    if path.is_dir():
        return read_folder(path)
    if path.is_file() and path.suffix == ".gguf":
        return read_gguf(path)
    if path.exists():
        raise ConfigError(f"{path} is a file; expected a model folder or a .gguf file")
    if isinstance(name, Path) or not is_repo_id(str(name)):
        raise ConfigError(f"{path}: no such folder")
    return hub_model(str(name))


def read_folder(folder: Path) -> ModelShape:
    """A model folder's shape (see the module docstring); a feature draft's config names its kind."""
    config = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
    if config is not None and "draft_type" in config:
        KINDS.folder_module(config["draft_type"], str(folder))  # an unknown kind: one line
        return from_args(str(folder), load_model_args(folder), folder_tensors(folder), feature_draft=True)
    if config is not None and not port_supports(config):  # checked in the order loading checks
        if not known_to_mlx_lm(config):
            raise unknown_architecture(folder, config.get("model_type"), tuple(FAMILIES))
        return from_config(str(folder), config, folder_tensors(folder))
    args = load_model_args(folder)
    return from_args(str(folder), args, folder_tensors(folder))


def folder_tensors(folder: Path) -> list[Tensor]:
    """Every tensor the folder's weight files hold, from their headers."""
    files, _ = weight_files(folder)
    tensors = []
    for file in files:
        header = SafetensorsReader(file).header
        for name, info in header.items():
            begin, end = info["data_offsets"]
            tensors.append(Tensor(name, tuple(info["shape"]), info["dtype"], end - begin))
    return tensors


def read_gguf(path: Path) -> ModelShape:
    """A GGUF file's shape and tensors, from its header (the RoPE factors are configuration)."""
    gguf = read_header(path)
    tensors = [Tensor(t.name, t.shape, t.type_name, t.nbytes) for t in gguf.tensors if t.name != ROPE_FREQS]
    shape = from_args(str(path), gguf_model_args(gguf), tensors)
    shape.stored_format = "gguf"
    return shape


def pair_names(pair: str) -> tuple[Path, Path]:
    """(target, draft) folders of a pair folder, from its pair.json."""
    folder = user_path(pair, "pair folder")
    manifest = read_pair_manifest(folder)
    return folder / manifest["target"], folder / manifest["draft"]
