"""`mlxspec` command line: parse options, call the library, print, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
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
    draft: Optional[str] = typer.Option(None, "--draft", "-d", help="Draft model for speculative decoding (same tokenizer as the target)."),
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
) -> None:
    """Generate text, streaming it to stdout; stats go to stderr. With --draft or --pair,
    decode speculatively (the output follows the target's distribution exactly)."""
    from .load import check_same_vocabulary, load, load_pair

    warnings.showwarning = _warn_line
    if prompt == "-":
        prompt = sys.stdin.read()
    if prefill_chunk is not None and prefill_chunk <= 0:
        raise MlxspecError(f"--prefill-chunk must be positive, got {prefill_chunk}")
    if pair is not None:
        if model is not None or draft is not None:
            raise MlxspecError("give either --pair or --model/--draft, not both")
        target, tokenizer, draft_model = load_pair(pair)
    elif model is None:
        raise MlxspecError("missing --model (or --pair)")
    else:
        target, tokenizer = load(model)
        draft_model = None
        if draft is not None:
            loaded_draft = load(draft)
            check_same_vocabulary((target, tokenizer), loaded_draft)
            draft_model = loaded_draft[0]
    _stream(
        target, tokenizer, prompt, as_json, verbose, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, top_k=top_k, seed=seed, chat=chat, prefill_chunk=prefill_chunk,
        draft=draft_model, num_draft_tokens=num_draft_tokens, adaptive=adaptive,
    )


@app.command()
@friendly_errors
def demo(
    max_tokens: int = typer.Option(64, "--max-tokens", "-n", help="Most tokens to generate."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Prompt text (default: a built-in one)."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where to write the demo checkpoint (default: a temporary folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text and stats) instead of streaming."),
) -> None:
    """Run the whole path on the embedded default: write a small random-weight Mistral
    checkpoint (HF layout, real Mistral tokenizer), convert it, load it and generate."""
    from .demo import DEMO_PROMPT, build_demo_checkpoint
    from .load import load

    with tempfile.TemporaryDirectory(prefix="mlxspec-demo-") as tmp:
        folder = build_demo_checkpoint((workdir or Path(tmp)) / "demo-model")
        typer.echo(f"demo checkpoint (random weights, real Mistral tokenizer), converted: {folder}", err=True)
        model, tokenizer = load(folder)
        _stream(model, tokenizer, prompt or DEMO_PROMPT, as_json, max_tokens=max_tokens, chat=True)


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
    src: Optional[str] = typer.Argument(None, help="Checkpoint to convert: a local folder (HF or Mistral layout) or a Hugging Face repo id."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (mlx-lm layout). With --target/--draft: the pair folder."),
    bits: Optional[int] = typer.Option(None, "--bits", "-b", help="Quantize projections and embeddings to 2, 3, 4, 6 or 8 bits (default: no quantization)."),
    group_size: int = typer.Option(64, "--group-size", "-g", help="Columns per quantization scale: 32, 64 or 128."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 for unquantized weights and scales (default: as stored)."),
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
