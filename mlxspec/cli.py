"""`mlxspec` command line: parse options, call the library, print, map errors to exit codes.
mlx-lm's spellings work too (`--max-tokens`, `--temp`, `--draft-model`, `--num-draft-tokens`)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from . import demo as demo_pair
from .arguments import check_bench, check_generation, check_positive, read_prompt, run
from .cli_options import (ADAPTIVE_HELP, DEQUANTIZE_HELP, DRAFT_HELP, LOOKUP_HELP, MAX_NGRAM_HELP,
                          MIN_NGRAM_HELP, NO_FIT_CHECK_HELP, PIPELINE_HELP, RECALIBRATE_HELP, adapter_option,
                          calibration_for, weights_label)
from .cli_conversation import chat_command, serve_command
from .cli_demo import demo_command
from .cli_kv import with_kv_options
from .cli_distill import distill_command
from .cli_plan import checked_weights, plan_command
from .plan import FitRequest, check_fit
from .bench import parse_ks, parse_temperatures, run_bench
from .console import byte_bars, colours, friendly_errors, stats_line, stream_text
from .convert.atomic import atomic_dir, check_writable
from .convert.converter import convert as convert_one
from .convert.pair import convert_pair
from .drafts import KINDS, draft_settings
from .cli_request import with_generation_options
from .engine import GenerationOptions, Session
from .errors import InputError
from .interrupts import exiting
from .selection import dequantize_default, named_models, select_models, weights_dtype
from .pipeline import PipelineError, close as close_pipeline, connect, lost_peers, pipeline_errors, serve_rank
from .load import load_draft
from .prompts import BUILTIN_PROMPTS, chosen_prompts
from .report import markdown, write_report

app = typer.Typer(
    help="Speculative decoding for Mistral-class models on MLX.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)

@app.command()
@friendly_errors
@with_generation_options()
@with_kv_options
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt text; '-' reads it from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder (mlxspec/mlx-lm/HF/Mistral layout) or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "--draft-model", "-d", help=DRAFT_HELP),
    pair: Optional[str] = typer.Option(None, "--pair", help="Folder written by `mlxspec convert --target T --draft D` (instead of --model/--draft)."),
    num_draft_tokens: int = typer.Option(6, "--num-draft-tokens", "-k", help="Most tokens drafted per round (with --no-adaptive: exactly this many)."),
    lookup: bool = typer.Option(False, "--lookup", help=LOOKUP_HELP),
    max_ngram: int = typer.Option(3, "--max-ngram", help=MAX_NGRAM_HELP),
    min_ngram: int = typer.Option(1, "--min-ngram", help=MIN_NGRAM_HELP),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help=ADAPTIVE_HELP),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template ([INST] ... [/INST] for Mistral)."),
    prefill_chunk: Optional[int] = typer.Option(None, "--prefill-chunk", help="Prompt tokens per prefill pass (default: the sliding window, else 2048)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="On a terminal, colour each token by origin: green = accepted draft token."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text and stats) instead of streaming (with --n: a list of them)."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    recalibrate: bool = typer.Option(False, "--recalibrate", help=RECALIBRATE_HELP),
    pipeline: bool = typer.Option(False, "--pipeline", help=PIPELINE_HELP),
    connect_timeout: float = typer.Option(60.0, "--connect-timeout", help="With --pipeline: seconds to wait for every rank to connect."),
    adapter: Optional[str] = adapter_option(),
    no_fit_check: bool = typer.Option(False, "--no-fit-check", help=NO_FIT_CHECK_HELP + " Context counted: the prompt's UTF-8 bytes (at least its tokens) + --max-tokens."),
    options: GenerationOptions = GenerationOptions(),
    kv: Optional[dict] = None,
) -> None:
    """Generate text, streaming it to stdout; stats go to stderr. With --draft or --pair,
    decode speculatively (the output follows the target's distribution exactly). With --n,
    the choices are decoded together and printed when done, each after a header line."""
    check_generation(num_draft_tokens, prefill_chunk)
    check_positive(connect_timeout, "--connect-timeout")
    text = read_prompt(prompt)
    dequant = dequantize_default(dequantize)
    if pipeline and adapter is not None:
        raise InputError("--adapter does not go with --pipeline yet (fuse it first: mlxspec convert SRC -o OUT --adapter A)")
    group = connect(connect_timeout) if pipeline else None
    if group is not None and group.rank() > 0:  # this rank serves its blocks to rank 0; only rank 0 prints
        return serve_rank(named_models(model, draft, pair, False)[0], group, weights_dtype(dequant), dequant)
    check_fit(model, draft, pair, FitRequest(context=len(text.encode()) + options.max_tokens, batch=options.n,
                                             dequantize=dequant,
                                             prefill_chunk=prefill_chunk, draft_tokens=num_draft_tokens, **kv),
              skip=no_fit_check or pipeline, how=", the prompt's bytes + --max-tokens", adapter=adapter)
    target, tokenizer, draft_model = select_models(model, draft, pair, False, dequant,
                                                   draft_settings(max_ngram, min_ngram), lookup, group=group,
                                                   adapter=adapter)
    with pipeline_errors(0), closing(target):
        session = Session(target, tokenizer, draft_model, num_draft_tokens=num_draft_tokens,
                          draft_policy="cost" if adaptive else "fixed", calibration=calibration_for(recalibrate, as_json),
                          **kv)
        if options.n > 1:
            return _print_choices(session.choices(text, options, chat=chat, prefill_chunk=prefill_chunk), as_json)
        steps = session.stream(text, options, chat=chat, prefill_chunk=prefill_chunk)
        _print_generation(steps, as_json, verbose)


@contextmanager
def closing(target):
    """Stop the other ranks of a pipelined target at the end, unless one of them is gone
    (then the ring is broken and they stop by themselves)."""
    try:
        yield
    except BaseException as exc:
        if not (lost_peers(exc) or isinstance(exc, PipelineError)):
            close_pipeline(target)
        raise
    try:
        close_pipeline(target)
    except PipelineError:  # a rank left just as the text was done: nothing is lost
        pass


def _print_generation(steps, as_json: bool, verbose: bool) -> None:
    """The generated text streamed (stats on stderr), or one JSON object with `as_json`."""
    if as_json:
        pieces = [(step.text, step.stats) for step in steps]
        stats = pieces[-1][1].as_dict() if pieces else {}
        typer.echo(json.dumps({"text": "".join(t for t, _ in pieces), **stats}, indent=2))
        return
    colour = colours(sys.stdout, verbose)
    _, stats = stream_text(steps, colour)
    typer.echo("")
    if colour:
        typer.echo("(green: accepted draft tokens; plain: tokens from the target)", err=True)
    if stats is not None:
        typer.echo(stats_line(stats), err=True)


def _print_choices(choices: list, as_json: bool) -> None:
    """Each of `--n` choices after a header line (its stats on stderr), or a JSON list."""
    if as_json:
        listed = [{"index": i, "text": c.text, **(c.stats.as_dict() if c.stats else {})} for i, c in enumerate(choices)]
        typer.echo(json.dumps(listed, indent=2))
        return
    for i, choice in enumerate(choices):
        typer.echo(f"--- choice {i} ---\n{choice.text}")
        if choice.stats is not None:
            typer.echo(f"choice {i}: {stats_line(choice.stats)}", err=True)


app.command("demo")(friendly_errors(demo_command))


@app.command()
@friendly_errors
@with_generation_options(exclude=("temperature", "seed", "stop", "logprobs", "response_format", "n"),
                         max_tokens=128)
@with_kv_options
def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Target model folder or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "--draft-model", "-d", help=DRAFT_HELP),
    pair: Optional[str] = typer.Option(None, "--pair", help="Folder written by `mlxspec convert --target T --draft D`."),
    use_demo: bool = typer.Option(False, "--demo", help="The demo pair (SmolLM2-135M-Instruct + the shipped feature draft)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", help="Prompts file: one per line, or blocks separated by a line '---' (default: the built-in prompts)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help=f"Built-in prompt kinds to run, comma-separated (default: all of {', '.join(BUILTIN_PROMPTS)})."),
    temperatures: str = typer.Option("0,1", "--temperatures", "--temp", help="Comma-separated sampling temperatures, e.g. 0,0.7,1."),
    ks: str = typer.Option("1..4,6,8", "--num-draft-tokens", "-k", help="Draft lengths to measure, e.g. 1..8 or 2,4,6."),
    max_ngram: int = typer.Option(3, "--max-ngram", help=MAX_NGRAM_HELP.replace(" or --lookup", "")),
    min_ngram: int = typer.Option(1, "--min-ngram", help=MIN_NGRAM_HELP.replace(" or --lookup", "")),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Also measure the cost model's adaptive draft length (up to the largest k)."),
    repeats: int = typer.Option(3, "--repeats", help="Runs of every configuration; the report gives medians."),
    compare_mlx_lm: bool = typer.Option(False, "--compare-mlx-lm", help="Also run mlx-lm's plain and speculative loops on the same weights."),
    mlx_lm_draft: Optional[str] = typer.Option(None, "--mlx-lm-draft", help="Draft model for mlx-lm's loop when --draft is a feature draft, which mlx-lm cannot run (--demo: the shipped distilled draft model)."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help=DEQUANTIZE_HELP),
    out: str = typer.Option("mlxspec-bench", "--out", "-o", help="Report folder: report.json, report.md and PNG plots."),
    force: bool = typer.Option(False, "--force", help="Replace an existing report folder that mlxspec wrote (never anything else)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots (needs matplotlib: pip install 'mlxspec[plots]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    recalibrate: bool = typer.Option(False, "--recalibrate", help=RECALIBRATE_HELP),
    adapter: Optional[str] = adapter_option(),
    no_fit_check: bool = typer.Option(False, "--no-fit-check", help=NO_FIT_CHECK_HELP + " Context counted: the longest prompt's UTF-8 bytes + --max-tokens."),
    options: GenerationOptions = GenerationOptions(max_tokens=128), kv: Optional[dict] = None,
) -> None:
    """Measure plain vs speculative decoding of a pair on this device: tokens/s, speedup, acceptance overall and per
    draft position, tokens per round, time to first token, peak memory, the cost model's speedup beside the measured one."""
    if draft is None and pair is None and not use_demo:
        raise InputError("bench needs a draft (--draft, --pair or --demo)")
    k_list, temps, settings = parse_ks(ks), parse_temperatures(temperatures), draft_settings(max_ngram, min_ngram)
    check_bench(options.max_tokens, repeats, mlx_lm_draft is not None, compare_mlx_lm)
    prompt_list = chosen_prompts(prompts_file, kinds)
    sources = [p for p in (model, draft, pair, mlx_lm_draft, adapter) if p is not None and not KINDS.makes(p)] + \
        (demo_pair.demo_sources() if use_demo else [])
    check_writable(out, force, sources=sources, kind="report")
    dequant = checked_weights(model, draft, pair, prompt_list, options.max_tokens, dequantize, max(k_list),
                              no_fit_check or use_demo, kv, adapter)
    target, tokenizer, draft_model = select_models(model, draft, pair, use_demo, dequant, settings, adapter=adapter)
    their_draft = None if not compare_mlx_lm or (mlx_lm_draft is None and not use_demo) else load_draft(
        mlx_lm_draft or demo_pair.demo_token_draft(), target, tokenizer, dtype=weights_dtype(dequant), dequantize=dequant)
    report = run_bench(target, tokenizer, draft_model, prompt_list, options=options, temperatures=temps,
                       ks=k_list, adaptive=adaptive, repeats=repeats, compare_mlx_lm=compare_mlx_lm,
                       mlx_lm_draft=their_draft, weights=weights_label(dequant, adapter),
                       calibration=calibration_for(recalibrate), log=lambda line: typer.echo(line, err=True), **kv)
    with atomic_dir(out, force, sources=sources, kind="report") as tmp:
        written = write_report(report, tmp, plots=plots)
    names = ", ".join(p.name for p in written) + ("" if not plots or any(p.suffix == ".png" for p in written)
                                                  else " (no plots: pip install 'mlxspec[plots]' for matplotlib)")
    typer.echo(json.dumps(report, indent=2) if as_json else markdown(report))
    typer.echo(f"wrote {out}: {names}", err=True)


@app.command()
@friendly_errors
def convert(
    src: Optional[str] = typer.Argument(None, help="Checkpoint to convert: a local folder (HF or Mistral layout), a .gguf file (llama.cpp/Ollama) or a Hugging Face repo id."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder (mlx-lm layout). With --target/--draft: the pair folder."),
    bits: Optional[int] = typer.Option(None, "--bits", "-b", help="Quantize projections and embeddings to 2, 3, 4, 6 or 8 bits (default: no quantization; a GGUF file's quantized tensors are kept as they are, Q6_K's re-quantized to 8 bits)."),
    group_size: int = typer.Option(64, "--group-size", "-g", help="Columns per quantization scale: 32, 64 or 128."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 for unquantized weights (default: as stored); with a GGUF file, expands its quantized tensors to this type."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder that mlxspec wrote as a model or pair (never a source, never a folder it did not write)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch, tag or commit (repo ids only)."),
    target: Optional[str] = typer.Option(None, "--target", help="Pair mode: the target checkpoint (folder or repo id)."),
    draft: Optional[str] = typer.Option(None, "--draft", help="Pair mode: the draft checkpoint (folder or repo id)."),
    draft_bits: Optional[int] = typer.Option(None, "--draft-bits", help="Pair mode: bits for the draft (default: same as --bits)."),
    max_shard_gb: float = typer.Option(2.0, "--max-shard-size", help="Largest output shard, in GB."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="An mlx-lm adapter folder (LoRA, DoRA or full) folded into the weights before they are cast or quantized, as mlx_lm.fuse does (quantized source tensors it changes are quantized again at their own bits)."),
) -> None:
    """Convert a checkpoint to MLX weights, optionally quantized; or a target + draft pair.

    Streams one tensor at a time (memory stays near one tensor's size) and writes the
    output atomically: it appears complete or not at all."""
    check_positive(max_shard_gb, "--max-shard-size")
    shard = max(1, int(min(max_shard_gb, 1e6) * 1024**3))
    if (target is None) != (draft is None):
        raise InputError("pair mode needs both --target and --draft")
    if target is not None and src is not None:
        raise InputError("give either SRC or --target/--draft, not both")
    if target is None and src is None:
        raise InputError("missing SRC (a folder or repo id), or --target and --draft")
    if draft_bits is not None and target is None:
        raise InputError("--draft-bits only applies with --target/--draft")
    if adapter is not None and target is not None:
        raise InputError("--adapter folds into one model (SRC); convert the target with it first, then the pair")
    bars, close = byte_bars(quiet, ["target", "draft"] if target is not None else ["converting"])
    try:
        if target is None:
            convert_one(src, out, bits=bits, group_size=group_size, dtype=dtype, force=force, revision=revision,
                        max_shard_bytes=shard, progress=bars.get("converting"), adapter=adapter)
            typer.echo(f"wrote {out}", err=True)
            return
        manifest = convert_pair(target, draft, out, bits=bits, draft_bits=draft_bits if draft_bits is not None else bits,
                                group_size=group_size, dtype=dtype, force=force, revision=revision,
                                max_shard_bytes=shard, progress=bars)
    finally:
        close()
    typer.echo(f"wrote {out}/target, {out}/draft and {out}/pair.json\n"
               f"pair: {manifest['kind']} ({manifest['tokenizers']})", err=True)


app.command("chat")(friendly_errors(chat_command))
app.command("serve")(friendly_errors(serve_command))
app.command("distill")(friendly_errors(distill_command))
app.command("plan")(friendly_errors(plan_command))


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point of `mlxspec` and `python -m mlxspec`."""
    code = run(app, argv)
    exiting()
    sys.exit(code)
