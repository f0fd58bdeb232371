"""What several commands' options share: help texts, and the defaults that depend on how
the command reports (calibration progress)."""

from __future__ import annotations

from typing import Any

import typer

from .console import calibration_progress
from .drafts import KINDS
from .engine import Calibration

DEQUANTIZE_HELP = ("Load weights in float32, expanding quantized ones (default: on for MLX's CPU backend, where "
                   "half-precision and quantized matmuls are slow).")
DRAFT_HELP = ("Draft for speculative decoding: a draft model's folder or Hub id (the target's tokenizer or another), "
              "a draft folder made for this target whose config.json names its kind (\"draft_type\" "
              + KINDS.help(folders=True) + "), or a kind by name: " + KINDS.help() + ".")
LOOKUP_HELP = ("With a draft model or a feature draft: prompt lookup proposes where the text repeats itself (a match "
               "running 3+ tokens back), the draft elsewhere.")
MAX_NGRAM_HELP = "With --draft ngram or --lookup: the longest n-gram looked up (1..64)."
MIN_NGRAM_HELP = "With --draft ngram or --lookup: the shortest n-gram looked up (1..64)."
ADAPTIVE_HELP = ("Choose the draft length per round from a cost model measured on this device (k=0 = plain decoding "
                 "when drafting does not pay); --no-adaptive always drafts -k tokens.")
ADAPTER_HELP = ("An mlx-lm adapter folder (adapter_config.json + adapters.safetensors, as `mlx_lm.lora` writes it: "
                "LoRA, DoRA or a full fine-tune) applied to the target only; the draft stays as it is.")
DEMO_KINDS = ("chat", "code", "summarisation")  # one prompt of each in `mlxspec demo`
PIPELINE_HELP = ("Split the target across the ranks that mlx.launch started (pipeline parallel; the draft runs on "
                 "rank 0, which alone prints): mlx.launch -n 2 --backend ring --python PYTHON -- -m mlxspec "
                 "generate --pipeline --model M ...")
NO_FIT_CHECK_HELP = ("Load even when `mlxspec plan` says the run does not fit this device (the check reads configs "
                     "and headers only, before any weight).")
RECALIBRATE_HELP = "Measure the round times of this pair again instead of reading the calibration cache."


def weights_label(dequantize: bool, adapter: str | None = None) -> str:
    return ("dequantized to float32 at load (--dequantize; default on the CPU backend)" if dequantize
            else "as stored (quantized)") + ("" if adapter is None else f"; target with the adapter {adapter}")


def calibration_for(recalibrate: bool, quiet: bool = False) -> Calibration:
    return Calibration(recalibrate=recalibrate, progress=calibration_progress(quiet))


def adapter_option() -> Any:
    """`--adapter PATH`: one definition for every command that loads a target."""
    return typer.Option(None, "--adapter", help=ADAPTER_HELP)
