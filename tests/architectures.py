"""Tiny random checkpoints of the architectures Mac owners run, saved by transformers (the
oracle's own writer, in transformers 5's spelling of the config), and the same config in
the spelling written before transformers 5 (`older_spelling`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import reinit_

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}

# architecture -> (transformers config class, model class, settings)
ARCHITECTURES = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(SMALL)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(SMALL, head_dim=16)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(SMALL, rope_scaling=LLAMA3_SCALING)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM",  # Pythia: partial rotary, parallel residual
                 dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=512, rotary_pct=0.25)),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM",  # five sliding layers (window 8), one global
                    dict(SMALL, num_hidden_layers=6, head_dim=16, sliding_window=8)),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(SMALL, pad_token_id=0)),
}


def architecture_checkpoint(out: Path, architecture: str, vocab_size: int, seed: int = 0,
                            tokenizer_dir: Path | None = None, head_scale: float = 1.0, **overrides) -> Path:
    """A random `architecture` model of `vocab_size` tokens saved by transformers (float32
    safetensors), with the tokenizer files of `tokenizer_dir` beside it; `head_scale`
    multiplies the output head (larger: a more confident model)."""
    import torch
    import transformers

    config_class, model_class, settings = ARCHITECTURES[architecture]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**{**settings, "vocab_size": vocab_size, **overrides},
                                                  tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = getattr(transformers, model_class)(config).eval()
    reinit_(model, seed)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(head_scale)
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer_dir is not None:
        for f in tokenizer_dir.iterdir():
            if f.is_file():
                shutil.copy(f, out / f.name)
    return out


def older_spelling(folder: Path) -> None:
    """Rewrite `folder`'s config.json as checkpoints on the Hub from before transformers 5 have
    it: `rope_theta` and `rope_scaling` top-level, GPT-NeoX's `rotary_pct`/`rotary_emb_base`,
    Gemma 3's `rope_local_base_freq` and `sliding_window_pattern`, no `rope_parameters`."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    rope = config.pop("rope_parameters", {}) or {}
    if "full_attention" in rope:  # per layer type (Gemma 3)
        config["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        rope = rope["full_attention"]
        types = config.pop("layer_types")
        config["sliding_window_pattern"] = types.index("full_attention") + 1
    config["rope_theta"] = rope.get("rope_theta", 10000.0)
    if rope.get("rope_type", "default") != "default":
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    if "partial_rotary_factor" in rope:
        key = "rotary_pct" if config["model_type"] == "gpt_neox" else "partial_rotary_factor"
        config[key] = rope["partial_rotary_factor"]
    if config["model_type"] == "gpt_neox":
        config["rotary_emb_base"] = config.pop("rope_theta")
    path.write_text(json.dumps(config, indent=2))
