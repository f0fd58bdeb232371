"""`mlxspec distill`: the command line of `mlxspec.distill` — options, progress bars with
an estimate of the time left, and the result as a line or as JSON."""

from __future__ import annotations

import json
import shlex
import sys
import time
from typing import Optional

import typer

from .cli_options import DEQUANTIZE_HELP, NO_FIT_CHECK_HELP, adapter_option
from .demo import demo_target
from .distill import KINDS, distill
from .errors import InputError
from .plan import FitRequest, check_fit
from .selection import dequantize_default


def stage_bars(quiet: bool):
    """A progress callback drawing one bar per stage on a terminal's stderr, with the time
    left at the stage's current pace; and a function that closes the last bar."""
    state: dict = {"stage": None, "start": 0.0}

    def update(stage: str, done: int, total: int) -> None:
        if quiet or not sys.stderr.isatty():
            return
        if stage != state["stage"]:
            state.update(stage=stage, start=time.monotonic(), first=done)
        elapsed, made = time.monotonic() - state["start"], max(done - state["first"], 1)
        left = elapsed / made * (total - done)
        filled = int(30 * done / max(total, 1))
        sys.stderr.write(f"\r{stage:<24} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}  ~{left:.0f} s left ")
        sys.stderr.flush()

    def close() -> None:
        if state["stage"] is not None and sys.stderr.isatty() and not quiet:
            sys.stderr.write("\n")

    return update, close


def layer_list(spec: str) -> str | list[int]:
    """--feature-layers as `distill` takes it: 'none', 'auto', or a list of block indices
    (a malformed list is passed on as text, which `distill` refuses with one line)."""
    text = spec.strip().lower()
    if text in ("none", "auto"):
        return text
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        return spec


def distill_command(
    target: Optional[str] = typer.Option(None, "--target", "-m", help="The target: a model folder (any layout mlxspec loads) or Hugging Face repo id."),
    use_demo: bool = typer.Option(False, "--demo", help="Distill for the embedded demo target (SmolLM2-135M-Instruct) instead of --target."),
    out: str = typer.Option(..., "--out", "-o", help="Folder for the draft (loadable with --draft); its work folder OUT.work holds the resumable state."),
    kind: str = typer.Option("feature", "--kind", help=f"Which draft: {' or '.join(KINDS)} (feature: reads the target's hidden states, EAGLE-style; model: a small model of the target's vocabulary)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL file, one prompt per line: a string, {\"prompt\": ...} or {\"messages\": [...]} (default: a built-in varied set). A tenth is held out for evaluation."),
    minutes: Optional[float] = typer.Option(None, "--minutes", help="Time budget for the whole run (answers up to 40%, training to 85%, then evaluation); default: none."),
    steps: int = typer.Option(2000, "--steps", help="Most training steps."),
    layers: int = typer.Option(1, "--layers", help="Transformer blocks in the draft (started from the target's first blocks)."),
    head_vocab: Optional[int] = typer.Option(None, "--head-vocab", help="Tokens the draft's head scores (the most frequent in the answers; default 8192, or the target's whole vocabulary when smaller)."),
    unroll: int = typer.Option(1, "--unroll", help="Feature draft: training passes, the later ones reading its own predicted features (EAGLE-3's training-time test; each costs a pass). 1 = true features only: at an 8-minute budget on the demo target 1 did better than 2."),
    feature_layers: str = typer.Option("auto", "--feature-layers", help="Feature draft: target blocks whose outputs it reads beside the final hidden state (EAGLE-3's fused features): 'auto' (blocks 2, n/2 and n-3 of n, as EAGLE-3 reads), 'none', or ascending indices like 2,15,27."),
    batch: int = typer.Option(8, "--batch", help="Rows a training step."),
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate, in (0, 1] (AdamW, warm-up then cosine decay)."),
    max_new: int = typer.Option(128, "--max-new", help="Most tokens of each answer the target writes."),
    seq_len: int = typer.Option(256, "--seq-len", help="Positions of a training row (the end of prompt + answer; at most the target's context)."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT.work (answers kept, training from its last checkpoint)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT (a draft mlxspec wrote) or start OUT.work over (one mlxspec marked as its own: never another folder)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the prompts' split and order, the sampled answers and the batches (0..2^32-1)."),
    as_json: bool = typer.Option(False, "--json", help="Print training.json's evaluation as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    adapter: Optional[str] = adapter_option(),
    no_fit_check: bool = typer.Option(False, "--no-fit-check", help=NO_FIT_CHECK_HELP + " Counted: the target with --batch rows of --seq-len tokens (not the draft it trains)."),
) -> None:
    """Train a draft for your own target on this machine: the target answers prompts, the
    draft learns its distributions, and is evaluated through mlxspec's speculative loop."""
    if (target is None) == (not use_demo):
        raise InputError("give the target: --target T, or --demo for the embedded demo target")
    if not use_demo and batch >= 1 and seq_len >= 1:  # distill itself refuses other values, in its own words
        check_fit(target, None, None, FitRequest(context=seq_len, batch=batch, dequantize=dequantize_default(dequantize)),
                  skip=no_fit_check, how=", --batch rows of --seq-len", adapter=adapter)
    source = (lambda: str(demo_target())) if use_demo else target  # the demo's is converted after the checks
    update, close = stage_bars(quiet)
    try:
        folder = distill(source, out, kind=kind, prompts=prompts, minutes=minutes, steps=steps, layers=layers,
                         head_vocab=head_vocab, unroll=unroll, feature_layers=layer_list(feature_layers), batch=batch,
                         lr=lr, max_new=max_new, seq_len=seq_len,
                         dequantize=dequantize, resume=resume, force=force, seed=seed, progress=update,
                         command=_command_line(), adapter=adapter)
    finally:
        close()
    info = json.loads((folder / "training.json").read_text())
    if as_json:
        typer.echo(json.dumps({"out": str(folder), "stopped_by": info["stopped_by"], **info["evaluation"]}, indent=2))
        return
    ev = info["evaluation"]
    typer.echo(f"wrote {folder} ({info['stopped_by']}, {info['seconds']:.0f} s): held-out top-1 "
               f"{ev['held_top1_before']} -> {ev['held_top1']}; acceptance per position at T=0 {ev['acceptance_T0']}")


def _command_line() -> str | None:
    """The command line that started this run (as typed: recorded in training.json), when
    this process is `mlxspec distill`."""
    return shlex.join(["mlxspec", *sys.argv[1:]]) if sys.argv[1:2] == ["distill"] else None
