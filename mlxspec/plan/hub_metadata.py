"""A Hub repo id's shape without its weights: config.json (a small file, fetched into the HF
cache like any metadata) and the safetensors headers the Hub serves (`get_safetensors_metadata`,
ranges of each file's first bytes). Without a network: one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hub import hub_unreachable, offline
from ..models.config import ModelArgs, port_supports
from .shape import ModelShape, Tensor, from_args, from_config


class HubMetadata:
    """Where the metadata comes from (huggingface_hub; tests hand in a stand-in)."""

    def config(self, repo_id: str) -> dict[str, Any]:
        import huggingface_hub

        return json.loads(Path(huggingface_hub.hf_hub_download(repo_id, "config.json")).read_text())

    def tensors(self, repo_id: str) -> list[Tensor]:
        import huggingface_hub

        meta = huggingface_hub.HfApi().get_safetensors_metadata(repo_id)
        return [Tensor(name, tuple(info.shape), info.dtype, info.data_offsets[1] - info.data_offsets[0])
                for file in meta.files_metadata.values() for name, info in file.tensors.items()]


def hub_model(repo_id: str, source: HubMetadata | None = None) -> ModelShape:
    """The shape of the model a Hub repo id names, from its metadata alone."""
    said = f"{repo_id}: no local folder of that name, so taken for a Hugging Face repo id"
    if source is None:
        why = "HF_HUB_OFFLINE is set" if offline() else hub_unreachable()
        if why:
            raise ConfigError(f"{said}; its metadata cannot be read offline ({why}): plan a local folder instead")
        source = HubMetadata()
    try:
        config, tensors = source.config(repo_id), source.tensors(repo_id)
    except ConfigError:
        raise
    except Exception as exc:  # huggingface-hub raises many types; each is one line here
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"{said}; its metadata could not be read ({type(exc).__name__}: {first})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{said}; its config.json does not hold a JSON object")
    if not port_supports(config):
        return from_config(repo_id, config, tensors)
    try:
        return from_args(repo_id, ModelArgs.from_hf_config(config), tensors)
    except ConfigError as exc:
        raise ConfigError(f"{repo_id}: config.json: {exc}") from None
