"""`mlxspec plan`: the memory a run takes and the speed a chip should reach, read from configs
and file headers alone (no weight is read or downloaded), printed as a table or JSON; the exit
status says whether it fits."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .cli_kv import with_kv_options
from .cli_options import DRAFT_HELP
from .errors import FitError, InputError
from .plan import FitRequest, check_fit, plan_named, projection, read_named
from .plan.chips import CHIPS
from .plan.projection import ASSUMED_ACCEPTANCE, EFFICIENCY
from .plan.render import as_dict, table
from .selection import dequantize_default

PLAN_HELP = (f"""Plan a run before loading it: the weights of target and draft as stored and as loaded, the KV
cache per token and at --context tokens x --batch rows (sliding windows and grouped KV heads
counted; --kv-bits for a quantized cache), the activation peak of a prefill chunk, the device's
limit (this machine: Metal's recommended working set, or physical memory on the CPU backend;
--device: a chip of the table) and the verdict, with what to change when it does not fit. On a
chip, a projection: plain tok/s = {EFFICIENCY} x bandwidth / bytes a token reads, speculative
tok/s at the draft's measured acceptance (a draft `mlxspec distill` wrote), --acceptance, or
{ASSUMED_ACCEPTANCE} assumed (labelled). MODEL is a folder, a .gguf file or a Hub id (metadata
only). Exit status 0 when it fits, 3 when it does not.""")


@with_kv_options
def plan_command(
    model: Optional[str] = typer.Argument(None, help="Target: a model folder, a .gguf file or a Hugging Face repo id (metadata only)."),
    draft: Optional[str] = typer.Option(None, "--draft", "--draft-model", "-d", help=DRAFT_HELP),
    pair: Optional[str] = typer.Option(None, "--pair", help="Folder written by `mlxspec convert --target T --draft D` (instead of MODEL/--draft)."),
    context: Optional[int] = typer.Option(None, "--context", "-c", help="Tokens each row holds (default: the model's context, at most 4096)."),
    batch: int = typer.Option(1, "--batch", help="Rows decoded together (serve's --max-batch)."),
    device: Optional[str] = typer.Option(None, "--device", help=f"Plan for an Apple chip, NAME[:GB] (default memory: the largest it comes with): {', '.join(c.name for c in CHIPS)}. Default: this machine."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help="Count weights expanded to float32 at load, as generate does by default on MLX's CPU backend (default: so on this machine's CPU backend; as stored with --device)."),
    num_draft_tokens: int = typer.Option(6, "--num-draft-tokens", "-k", help="Most tokens drafted a round (a sliding-window cache keeps this many more)."),
    prefill_chunk: Optional[int] = typer.Option(None, "--prefill-chunk", help="Prompt tokens per prefill pass (default: the sliding window, else 2048)."),
    acceptance: Optional[float] = typer.Option(None, "--acceptance", help="Acceptance rate to project speculation with (0..1; default: measured by distill, else assumed)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every number (bytes as integers)."),
    kv: Optional[dict] = None,
) -> None:
    if acceptance is not None and not 0 <= acceptance <= 1:
        raise InputError(f"--acceptance must be in 0..1, got {acceptance}")
    dequant = dequantize if dequantize is not None else (False if device is not None else dequantize_default(None))
    request = FitRequest(context=context, batch=batch, dequantize=dequant, prefill_chunk=prefill_chunk,
                         draft_tokens=num_draft_tokens, **(kv or {}))
    named = read_named(model, draft, pair)
    plan = plan_named(named, request, device)
    speed = projection(plan, named, acceptance)
    typer.echo(json.dumps(as_dict(plan, speed), indent=2) if as_json else table(plan, speed, named.draft_kind is not None))
    if not plan.fits:
        raise typer.Exit(FitError.exit_code)


plan_command.__doc__ = PLAN_HELP


def checked_weights(model: Optional[str], draft: Optional[str], pair: Optional[str], prompts: list[tuple[str, str]],
                    max_tokens: int, dequantize: Optional[bool], draft_tokens: int, skip: bool,
                    kv: Optional[dict] = None, adapter: Optional[str] = None) -> bool:
    """`bench`'s fit check (the longest prompt's UTF-8 bytes, at least its tokens, + --max-tokens;
    `kv`: --kv-bits and --kv-group-size); whether the weights load dequantized."""
    dequant = dequantize_default(dequantize)
    longest = max((len(text.encode()) for _, text in prompts), default=0)
    check_fit(model, draft, pair, FitRequest(context=longest + max_tokens, dequantize=dequant, draft_tokens=draft_tokens,
                                             **(kv or {})),
              skip=skip, how=", the longest prompt's bytes + --max-tokens", adapter=adapter)
    return dequant
