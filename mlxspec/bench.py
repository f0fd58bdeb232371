"""`mlxspec bench`: plain vs speculative decoding of one pair on this device, optionally
side by side with mlx-lm's loops on the same weights (`baseline`).

Every configuration (plain; speculative with a fixed k; adaptive) runs on every prompt
and temperature, `repeats` times, interleaved so that machine noise spreads evenly. Each
run records when every token arrived; `report` turns the runs into rates, acceptance per
draft position, the cost model's predictions, Markdown and plots.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable, Iterator, Sequence

import mlx.core as mx

from .baseline import mlx_lm_models, mlx_lm_tokens, rounds_from_flags
from .drafts import MAX_DRAFT_TOKENS, Draft, as_draft, describe_draft
from .engine import Calibration, GenerationOptions, Session, SpeculativeStats
from .engine.request import prompt_ids, token_budget
from .errors import InputError
from .models import Model
from .report import SCHEMA_VERSION, Config, Run, compare, environment, summarise, timings_report
from .text import Tokenizer
from .validate import int_text


MAX_REPEATS = 1000  # runs of one configuration: more only makes a bench that never ends
_K_PART = re.compile(r"^\s*([0-9]+)\s*(?:\.\.\s*([0-9]+)\s*)?$")


def parse_ks(text: str) -> list[int]:
    """'1..4,6,8' -> [1, 2, 3, 4, 6, 8]: comma-separated draft lengths or ascending ranges
    lo..hi, each k in 1..64. Anything else (empty parts, open or descending ranges, signs)
    is refused with the part that is wrong."""
    ks: set[int] = set()
    for part in text.split(","):
        match = _K_PART.match(part)
        if match is None:
            raise InputError(f"--num-draft-tokens: cannot read {part.strip()!r} in {text!r} "
                             "(write draft lengths and ranges like '1..4,6,8')")
        lo, hi = (int_text(n) for n in (match[1], match[2] or match[1]))  # None: too many digits to be a k
        if lo is not None and hi is not None and hi < lo:
            raise InputError(f"--num-draft-tokens: range {part.strip()!r} runs backwards (write {hi}..{lo})")
        if lo is None or hi is None or lo < 1 or hi > MAX_DRAFT_TOKENS:
            raise InputError(f"--num-draft-tokens: every k must be in 1..{MAX_DRAFT_TOKENS}, got {part.strip()[:40]!r}")
        ks.update(range(lo, hi + 1))
    return sorted(ks)


def parse_temperatures(text: str) -> list[float]:
    """'0,0.7,1' -> [0.0, 0.7, 1.0]: comma-separated finite temperatures >= 0, no empty parts."""
    temps = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"--temperatures: cannot read {part.strip()!r} in {text!r} (e.g. '0,0.7,1')") from None
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"--temperatures: every temperature must be a finite number >= 0, got {part.strip()!r}")
        temps.append(value)
    return list(dict.fromkeys(temps))


def timed_run(tokens: Iterator[tuple[int, bool]], eos: set[int], limit: int) -> tuple[Run, list[bool]]:
    """Consume (token, from_draft) pairs up to end of sequence or `limit`, timing each arrival."""
    mx.reset_peak_memory()
    start = time.perf_counter()
    flags, stamps = [], []
    for token, from_draft in tokens:
        flags.append(from_draft), stamps.append(time.perf_counter() - start)
        if token in eos or len(flags) >= limit:
            break
    return Run(len(flags), stamps[0], stamps[-1] - stamps[0], mx.get_peak_memory() / 1e9), flags


class Bench:
    """The sessions and mlx-lm models every configuration runs on."""

    def __init__(self, target: Model, draft: Draft, ks: Sequence[int], calibration: Calibration,
                 mlx_lm_draft: Model | None = None, compare_mlx_lm: bool = False, kv: dict | None = None) -> None:
        kv = kv or {}  # kv_bits, kv_group_size: every session's caches
        self.sessions = {k: Session(target, None, draft, num_draft_tokens=k, draft_policy="fixed", **kv) for k in ks}
        self.adaptive = Session(target, None, draft, num_draft_tokens=max(ks), calibration=calibration, **kv)
        their_draft = as_draft(mlx_lm_draft if mlx_lm_draft is not None else draft).token_model
        self.theirs = mlx_lm_models(target, their_draft) if compare_mlx_lm else None

    def run(self, config: Config, ids: list[int], options: GenerationOptions, eos: set[int], seed: int) -> Run:
        """One generation of one configuration, timed."""
        max_tokens = options.max_tokens
        if config.engine == "mlx-lm":
            run, flags = timed_run(mlx_lm_tokens(*self.theirs, ids, options, config.k, seed), eos, max_tokens)
            if config.k:
                run.drafted, run.accepted = rounds_from_flags(flags, config.k)
            return run
        session = self.adaptive if config.adaptive or config.k == 0 else self.sessions[config.k]
        steps = session.stream(ids, options, speculative=config.k > 0)
        last: dict[str, Any] = {}

        def pairs() -> Iterator[tuple[int, bool]]:
            for step in steps:
                last["stats"] = step.stats
                yield step.token, step.from_draft

        run, _ = timed_run(pairs(), eos, max_tokens)
        stats = last["stats"]
        if isinstance(stats, SpeculativeStats):
            run.drafted, run.accepted = list(stats.drafted_per_position), list(stats.accepted_per_position)
        return run


def configurations(ks: Sequence[int], adaptive: bool, compare_mlx_lm: bool) -> list[Config]:
    """Plain, every fixed k, adaptive; and mlx-lm's plain and fixed k."""
    configs = [Config("mlxspec", 0)] + [Config("mlxspec", k) for k in ks]
    if adaptive:
        configs.append(Config("mlxspec", max(ks), adaptive=True))
    if compare_mlx_lm:
        configs += [Config("mlx-lm", 0)] + [Config("mlx-lm", k) for k in ks]
    return configs


def check_options(draft: Draft, mlx_lm_draft: Model | None, compare_mlx_lm: bool, repeats: int,
                  max_tokens: int) -> None:
    """`InputError` for options the bench cannot run with."""
    theirs = as_draft(mlx_lm_draft if mlx_lm_draft is not None else draft)
    if compare_mlx_lm and theirs.token_model is None:
        raise InputError(f"mlx-lm cannot run a {theirs.describe()}: give it a draft model of its own (--mlx-lm-draft)")
    check_numbers(repeats, max_tokens)


def check_numbers(repeats: int, max_tokens: int) -> None:
    """What a bench needs of its numbers (checked by the CLI before anything is loaded)."""
    if not 1 <= repeats <= MAX_REPEATS:
        raise InputError(f"--repeats must be in 1..{MAX_REPEATS} (the report gives medians), got {repeats}")
    if max_tokens < 2:
        raise InputError(f"--max-tokens must be >= 2 (rates need two tokens), got {max_tokens}")


def encode_prompts(target: Model, tokenizer: Tokenizer, prompts: list[tuple[str, str]],
                   max_tokens: int) -> list[tuple[str, str, list[int]]]:
    """(kind, text, chat-templated ids) per prompt, each checked against the target's
    context before anything is calibrated or timed; an error names the prompt."""
    encoded = []
    for n, (kind, text) in enumerate(prompts, 1):
        try:
            ids = prompt_ids(tokenizer, text, chat=True, context=target.args.max_position_embeddings)
            token_budget(target, ids, max_tokens)
        except InputError as exc:
            raise InputError(f"prompt {n} ({text.splitlines()[0][:40]!r}...): {exc}") from None
        encoded.append((kind, text, ids))
    return encoded


def run_bench(target: Model, tokenizer: Tokenizer, draft: Draft, prompts: list[tuple[str, str]], *,
              options: GenerationOptions = GenerationOptions(max_tokens=128), temperatures: Sequence[float] = (0.0,), ks: Sequence[int] = (1, 2, 3, 4),
              adaptive: bool = True, repeats: int = 3, compare_mlx_lm: bool = False,
              mlx_lm_draft: Model | None = None, weights: str = "as stored", calibration: Calibration | None = None,
              log: Callable[[str], None] = lambda s: None, kv_bits: int | None = None,
              kv_group_size: int = 64) -> dict:
    """Run every configuration; return the report (see `report.SCHEMA_VERSION`). mlx-lm's
    speculative loop runs `mlx_lm_draft` when given (it cannot run a feature draft), else `draft`.
    Every run samples with `options` at each of `temperatures`; mlxspec's caches are quantized
    as `kv_bits`/`kv_group_size` say (see `Session`)."""
    max_tokens = options.max_tokens
    check_options(draft, mlx_lm_draft, compare_mlx_lm, repeats, max_tokens)
    encoded = encode_prompts(target, tokenizer, prompts, max_tokens)
    bench = Bench(target, draft, ks, calibration or Calibration(), mlx_lm_draft, compare_mlx_lm,
                  dict(kv_bits=kv_bits, kv_group_size=kv_group_size))
    # before any timed run: the adaptive runs read these, and the predictions rest on them
    timings = {temp: bench.adaptive.timings(options.with_values({"temperature": temp}).sampling)
               for temp in temperatures}
    configs = configurations(ks, adaptive, compare_mlx_lm)
    results = _run_all(bench, configs, encoded, temperatures, repeats, options, set(tokenizer.eos_ids), log)
    drafts = {"mlxspec": describe_draft(draft)}
    if compare_mlx_lm:
        drafts["mlx-lm"] = describe_draft(mlx_lm_draft if mlx_lm_draft is not None else draft)
    rows = summarise(configs, temperatures, results, timings)
    kv_cache = "full precision" if kv_bits is None else f"{kv_bits}-bit, groups of {kv_group_size} (mlxspec's runs)"
    return {"comparison": compare(rows, temperatures), "schema": SCHEMA_VERSION, "weights": weights, "kv_cache": kv_cache,
            "drafts": drafts, "max_tokens": max_tokens, "repeats": repeats,
            "prompts": [{"kind": k, "text": t, "tokens": len(i)} for k, t, i in encoded],
            "timings": timings_report(timings), "environment": environment(), "rows": rows}


def _run_all(bench: Bench, configs: list[Config], encoded: list, temperatures: Sequence[float], repeats: int,
             options: GenerationOptions, eos: set[int], log: Callable[[str], None]) -> dict[tuple[str, float], list[list[Run]]]:
    """Every configuration on every prompt and temperature, repeats outermost."""
    results: dict[tuple[str, float], list[list[Run]]] = {}
    total, done = len(configs) * len(temperatures) * repeats * len(encoded), 0
    for repeat in range(repeats):
        for temp in temperatures:
            for p, (kind, _, ids) in enumerate(encoded):
                for config in configs:
                    run = bench.run(config, ids, options.with_values({"temperature": temp}), eos,
                                    seed=1000 * repeat + p)
                    results.setdefault((config.label, temp), [[] for _ in range(repeats)])[repeat].append(run)
                    done += 1
                    log(f"[{done}/{total}] T={temp:g} {kind} prompt {p + 1}: {config.label}: "
                        f"{run.tokens - 1} tokens in {run.decode_time:.2f} s")
    return results

