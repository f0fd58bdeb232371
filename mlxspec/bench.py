"""`mlxspec bench`: plain vs speculative decoding of one pair on this device, optionally
side by side with mlx-lm's loops on the same weights.

Every configuration (plain; speculative with a fixed k; adaptive) runs on every prompt
and temperature, `repeats` times, interleaved so that machine noise spreads evenly.
Rates are decode rates: tokens after the first over the time after the first token;
time to first token is reported apart. The cost model's prediction for a fixed k uses
the acceptance measured per draft position and the calibrated costs of whole rounds at
the run's temperature: speedup = (1 + sum_j P(first j accepted)) * t_round(0) / t_round(k),
t_round(0) being a plain decoding step (see `costmodel`).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import mlx.core as mx

from .costmodel import Timings, calibrate
from .errors import InputError
from .feature_draft import FeatureDraft
from .model import Model
from .sampling import SamplingParams
from .tokenizer import Tokenizer

SCHEMA_VERSION = 4  # 2: "drafts" (what each engine drafted with); 3: timings.sampling_s;
# 4: timings.round_s (whole rounds per temperature) and weight_first_rows instead of sampling_s
PLOT_FILES = ("tokens_per_s.png", "acceptance.png")  # written by write_report with matplotlib


@dataclass
class Config:
    """One way of decoding: engine ("mlxspec" | "mlx-lm"), k (0 = plain), adaptive."""

    engine: str
    k: int
    adaptive: bool = False

    @property
    def label(self) -> str:
        mode = "plain" if self.k == 0 else ("adaptive" if self.adaptive else f"k={self.k}")
        return f"{self.engine} {mode}"


@dataclass
class Run:
    """What one generation measured."""

    tokens: int
    ttft: float
    decode_time: float
    peak_memory_gb: float
    drafted: list[int] = field(default_factory=list)   # per draft position
    accepted: list[int] = field(default_factory=list)  # per draft position


def parse_ks(text: str) -> list[int]:
    """'1..4,6,8' -> [1, 2, 3, 4, 6, 8]; every k must be >= 1."""
    ks: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("..")
            ks.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise InputError(f"--num-draft-tokens: cannot read {text!r} (e.g. '1..4,6,8')") from None
    if not ks or min(ks) < 1:
        raise InputError(f"--num-draft-tokens: every k must be >= 1, got {text!r}")
    return sorted(set(ks))


def parse_temperatures(text: str) -> list[float]:
    try:
        temps = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"--temperatures: cannot read {text!r} (e.g. '0,0.7,1')") from None
    if not temps or min(temps) < 0:
        raise InputError(f"--temperatures: need one or more values >= 0, got {text!r}")
    return temps


def _timed(tokens, eos: set[int], limit: int) -> tuple[list[int], list[bool], list[float]]:
    """Consume (token, from_draft) pairs up to end of sequence or `limit`; arrival times in seconds."""
    start = time.perf_counter()
    ids, flags, stamps = [], [], []
    for tok, from_draft in tokens:
        ids.append(tok), flags.append(from_draft), stamps.append(time.perf_counter() - start)
        if tok in eos or len(ids) >= limit:
            break
    return ids, flags, stamps


def run_mlxspec(target: Model, draft: Model | None, prompt: list[int], max_tokens: int, temperature: float,
                k: int, adaptive: bool, eos: set[int], seed: int) -> Run:
    from .generate import stream_generate

    mx.random.seed(seed)
    steps = stream_generate(target, None, prompt, max_tokens=max_tokens, temperature=temperature,
                            draft=draft if k else None, num_draft_tokens=max(k, 1), adaptive=adaptive)
    last = {}

    def pairs():
        for step in steps:
            last["stats"] = step.stats
            yield step.token, step.from_draft

    mx.reset_peak_memory()
    ids, _, stamps = _timed(pairs(), eos, max_tokens)
    stats = last["stats"]
    run = Run(len(ids), stamps[0], stamps[-1] - stamps[0], mx.get_peak_memory() / 1e9)
    if k:
        run.drafted, run.accepted = list(stats.drafted_per_position), list(stats.accepted_per_position)
    return run


def run_mlx_lm(target: Any, draft: Any | None, prompt: list[int], max_tokens: int, temperature: float,
               k: int, eos: set[int], seed: int) -> Run:
    """mlx-lm's own loops (`generate_step` / `speculative_generate_step`) on the same weights."""
    from mlx_lm.generate import generate_step, speculative_generate_step
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(seed)
    sampler = make_sampler(temp=temperature)
    if k == 0:
        gen = ((int(t), False) for t, _ in generate_step(mx.array(prompt), target, max_tokens=max_tokens, sampler=sampler))
    else:
        gen = ((int(t), bool(d)) for t, _, d in speculative_generate_step(
            mx.array(prompt), target, draft, num_draft_tokens=k, max_tokens=max_tokens, sampler=sampler))
    mx.reset_peak_memory()
    ids, flags, stamps = _timed(gen, eos, max_tokens)
    run = Run(len(ids), stamps[0], stamps[-1] - stamps[0], mx.get_peak_memory() / 1e9)
    if k:  # rounds: a run of accepted draft tokens, then one target token
        run.drafted, run.accepted = [0] * k, [0] * k
        accepted = 0
        for flag in flags[1:]:  # the first token comes from the prefill
            if flag:
                accepted += 1
                continue
            for j in range(k):
                run.drafted[j] += 1
                run.accepted[j] += int(j < accepted)
            accepted = 0
    return run


def mlx_lm_models(target: Model, draft: Model | None) -> tuple[Any, Any]:
    """The same weights in mlx-lm's Llama/Mistral modules. A draft with a `SubsetHead` runs
    mlx-lm's transformer body under mlxspec's head (mlx-lm has no such head)."""
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    def build(model: Model) -> Any:
        config = model.args.to_hf_config()
        config.pop("quantization", None)
        config.pop("head_vocab_size", None)
        model_class, args_class = _get_classes(config)
        theirs = model_class(args_class.from_dict(config))
        params = [(k, v) for k, v in tree_flatten(model.parameters()) if not k.startswith("lm_head")]
        if model.args.quantization:
            raise InputError("--compare-mlx-lm needs unquantized weights here (use --dequantize)")
        theirs.load_weights(params, strict=False)
        return theirs

    class SubsetHeadDraft(nn.Module):
        def __init__(self, body: Any, head: Any) -> None:
            super().__init__()
            self.body, self.head = body, head

        @property
        def layers(self):
            return self.body.layers

        def __call__(self, inputs, cache=None, **kwargs):
            return self.head(self.body.model(inputs, cache=cache))

    their_target = build(target)
    their_draft = None
    if draft is not None:
        body = build(draft)
        their_draft = SubsetHeadDraft(body, draft.lm_head) if draft.args.head_vocab_size else body
        if not draft.args.head_vocab_size and not draft.args.tie_word_embeddings:
            their_draft.load_weights([("lm_head.weight", draft.lm_head.weight)], strict=False)
    if not target.args.tie_word_embeddings:
        their_target.load_weights([("lm_head.weight", target.lm_head.weight)], strict=False)
    return their_target, their_draft


def predicted_speedup(drafted: Sequence[int], accepted: Sequence[int], k: int, timings: Timings) -> float | None:
    """The cost model's speedup for drafting k tokens at the measured per-position acceptance
    (`timings` calibrated for the run's kind of sampling)."""
    if not drafted or not drafted[0]:
        return None
    expected = 1 + sum(a / d for a, d in zip(accepted[:k], drafted[:k]) if d)
    return expected / timings.round(k) * timings.round(0)


def describe_draft(draft: Model | FeatureDraft) -> str:
    """One line saying what kind of draft this is."""
    a = draft.args
    head = f", head over {a.head_vocab_size} tokens" if a.head_vocab_size else ""
    if isinstance(draft, FeatureDraft):
        return f"feature draft (reads the target's hidden states), {a.num_hidden_layers} blocks{head}"
    return f"draft model, {a.num_hidden_layers} blocks{head}"


def run_bench(target: Model, tokenizer: Tokenizer, draft: Model | FeatureDraft, prompts: list[tuple[str, str]], *,
              max_tokens: int = 128, temperatures: Sequence[float] = (0.0,), ks: Sequence[int] = (1, 2, 3, 4),
              adaptive: bool = True, repeats: int = 3, compare_mlx_lm: bool = False,
              mlx_lm_draft: Model | None = None, weights: str = "as stored",
              log: Callable[[str], None] = lambda s: None) -> dict:
    """Run every configuration; return the report (see `SCHEMA_VERSION`, `write_report`).
    mlx-lm's speculative loop runs `mlx_lm_draft` when given (it cannot run a feature draft),
    else `draft`."""
    their_draft_model = mlx_lm_draft if mlx_lm_draft is not None else draft
    if compare_mlx_lm and isinstance(their_draft_model, FeatureDraft):
        raise InputError("mlx-lm cannot run a feature draft: give it a draft model of its own (--mlx-lm-draft)")
    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}")
    if max_tokens < 2:
        raise InputError(f"--max-tokens must be >= 2, got {max_tokens}")
    k_max = max(ks)
    # before any timed run: the adaptive runs read these, and the predictions rest on them
    timings = {temp: calibrate(target, draft, k_max, SamplingParams(temperature=temp)) for temp in temperatures}
    configs = [Config("mlxspec", 0)] + [Config("mlxspec", k) for k in ks]
    if adaptive:
        configs.append(Config("mlxspec", k_max, adaptive=True))
    if compare_mlx_lm:
        their_target, their_draft = mlx_lm_models(target, their_draft_model)
        configs += [Config("mlx-lm", 0)] + [Config("mlx-lm", k) for k in ks]
    eos = set(tokenizer.eos_ids)
    encoded = [(kind, text, tokenizer.apply_chat(text)) for kind, text in prompts]
    results: dict[tuple[str, float], list[list[Run]]] = {}
    total = len(configs) * len(temperatures) * repeats * len(encoded)
    done = 0
    for repeat in range(repeats):
        for temp in temperatures:
            for p, (kind, _, ids) in enumerate(encoded):
                for config in configs:
                    seed = 1000 * repeat + p
                    if config.engine == "mlxspec":
                        run = run_mlxspec(target, draft, ids, max_tokens, temp, config.k, config.adaptive, eos, seed)
                    else:
                        run = run_mlx_lm(their_target, their_draft, ids, max_tokens, temp, config.k, eos, seed)
                    results.setdefault((config.label, temp), [[] for _ in range(repeats)])[repeat].append(run)
                    done += 1
                    log(f"[{done}/{total}] T={temp:g} {kind} prompt {p + 1}: {config.label}: "
                        f"{run.tokens - 1} tokens in {run.decode_time:.2f} s")
    rows = summarise(configs, temperatures, results, timings)
    drafts = {"mlxspec": describe_draft(draft)}
    if compare_mlx_lm:
        drafts["mlx-lm"] = describe_draft(their_draft_model)
    return {"comparison": compare(rows, temperatures), "schema": SCHEMA_VERSION, "weights": weights,
            "drafts": drafts, "max_tokens": max_tokens, "repeats": repeats,
            "prompts": [{"kind": k, "text": t, "tokens": len(i)} for k, t, i in encoded],
            "timings": timings_report(timings),
            "rows": rows}


def timings_report(timings: dict[float, Timings]) -> dict:
    """The calibration behind the predictions: the passes (the same at every temperature)
    and, per temperature, whole rounds by draft length (k = 0: a plain step)."""
    any_t = next(iter(timings.values()))
    return {"draft_step_s": any_t.draft_step,
            "target_pass_s": {str(n): t for n, t in any_t.target_pass.items()},
            "weight_first_rows": any_t.weight_first_rows,
            "round_s": {f"{temp:g}": {str(k): t for k, t in ts.rounds.items()} for temp, ts in timings.items()}}


def _aggregate(runs: list[Run]) -> dict[str, Any]:
    tokens = sum(r.tokens - 1 for r in runs)
    decode = sum(r.decode_time for r in runs)
    out: dict[str, Any] = {"tokens_per_s": tokens / decode if decode else 0.0,
                           "ttft_s": statistics.median(r.ttft for r in runs),
                           "peak_memory_gb": max(r.peak_memory_gb for r in runs),
                           "generated_tokens": sum(r.tokens for r in runs)}
    if runs[0].drafted:
        width = max(len(r.drafted) for r in runs)
        drafted = [sum(r.drafted[j] for r in runs if j < len(r.drafted)) for j in range(width)]
        accepted = [sum(r.accepted[j] for r in runs if j < len(r.accepted)) for j in range(width)]
        rounds = drafted[0] if drafted else 0
        out.update(drafted=drafted, accepted=accepted,
                   acceptance=sum(accepted) / sum(drafted) if sum(drafted) else 0.0,
                   acceptance_per_position=[a / d if d else None for a, d in zip(accepted, drafted)],
                   tokens_per_round=(sum(accepted) + rounds) / rounds if rounds else None)
    return out


def summarise(configs: list[Config], temperatures: Sequence[float],
              results: dict[tuple[str, float], list[list[Run]]], timings: dict[float, Timings]) -> list[dict]:
    """One row per (configuration, temperature): medians over repeats of the pooled prompts."""
    rows = []
    for temp in temperatures:
        plain = {}
        for config in configs:
            per_repeat = [_aggregate(runs) for runs in results[(config.label, temp)]]
            row: dict[str, Any] = {"engine": config.engine, "k": "adaptive" if config.adaptive else config.k,
                                   "temperature": temp}
            for key in ("tokens_per_s", "ttft_s", "acceptance", "tokens_per_round"):
                values = [r[key] for r in per_repeat if r.get(key) is not None]
                row[key] = statistics.median(values) if values else None
            row["peak_memory_gb"] = max(r["peak_memory_gb"] for r in per_repeat)
            if per_repeat[0].get("drafted") is not None:
                drafted = [sum(x) for x in zip(*(r["drafted"] for r in per_repeat))]
                accepted = [sum(x) for x in zip(*(r["accepted"] for r in per_repeat))]
                row["acceptance_per_position"] = [a / d if d else None for a, d in zip(accepted, drafted)]
                if not config.adaptive and config.engine == "mlxspec":
                    row["predicted_speedup"] = predicted_speedup(drafted, accepted, config.k, timings[temp])
            if config.k == 0:
                plain[config.engine] = row["tokens_per_s"]
            rows.append(row)
        for row in rows:
            if row["temperature"] == temp:
                base = plain.get("mlxspec")
                row["speedup"] = row["tokens_per_s"] / base if base else None
                ref = plain.get(row["engine"])
                row["speedup_vs_own_plain"] = row["tokens_per_s"] / ref if ref else None
    return rows


def compare(rows: list[dict], temperatures: Sequence[float]) -> list[dict]:
    """Per temperature: the best fixed k of each engine, the adaptive rate, and the
    mlxspec / mlx-lm ratio at equal k."""
    out = []
    for temp in temperatures:
        here = [r for r in rows if r["temperature"] == temp]
        entry: dict[str, Any] = {"temperature": temp}
        for engine in ("mlxspec", "mlx-lm"):
            fixed = [r for r in here if r["engine"] == engine and isinstance(r["k"], int) and r["k"] > 0]
            if fixed:
                best = max(fixed, key=lambda r: r["tokens_per_s"])
                entry[f"{engine}_best"] = {"k": best["k"], "tokens_per_s": best["tokens_per_s"],
                                          "speedup": best["speedup"], "acceptance": best.get("acceptance")}
        adaptive = next((r for r in here if r["k"] == "adaptive"), None)
        if adaptive:
            entry["mlxspec_adaptive"] = {"tokens_per_s": adaptive["tokens_per_s"], "speedup": adaptive["speedup"]}
        theirs = {r["k"]: r for r in here if r["engine"] == "mlx-lm"}
        entry["same_k_ratio"] = {str(r["k"]): r["tokens_per_s"] / theirs[r["k"]]["tokens_per_s"]
                                 for r in here if r["engine"] == "mlxspec" and r["k"] in theirs}
        if "mlx-lm_best" in entry:
            ours = max([entry.get("mlxspec_best", {}).get("tokens_per_s", 0.0),
                        entry.get("mlxspec_adaptive", {}).get("tokens_per_s", 0.0)])
            entry["best_vs_best"] = ours / entry["mlx-lm_best"]["tokens_per_s"]
        out.append(entry)
    return out


def markdown(report: dict) -> str:
    """The report as a Markdown table (one row per configuration and temperature)."""
    def f(x: Any, nd: int = 2) -> str:
        return "" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    lines = [f"Weights: {report['weights']}; up to {report['max_tokens']} tokens per prompt, "
             f"{len(report['prompts'])} prompts, median of {report['repeats']} repeats. "
             "tok/s = decode rate after the first token; speedup vs mlxspec plain decoding.",
             "Drafts: " + "; ".join(f"{engine}: {what}" for engine, what in report.get("drafts", {}).items()) + ".", "",
             "| engine | T | k | tok/s | speedup | predicted | acceptance | tok/round | TTFT (s) | peak GB | acceptance per position |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        per_pos = " ".join(f(a) for a in r.get("acceptance_per_position") or [])
        lines.append(f"| {r['engine']} | {r['temperature']:g} | {r['k']} | {f(r['tokens_per_s'])} | {f(r['speedup'])} | "
                     f"{f(r.get('predicted_speedup'))} | {f(r.get('acceptance'))} | {f(r.get('tokens_per_round'))} | "
                     f"{f(r['ttft_s'], 3)} | {f(r['peak_memory_gb'], 3)} | {per_pos} |")
    if report.get("comparison"):
        lines.append("")
    for c in report.get("comparison", []):
        parts = [f"T={c['temperature']:g}:"]
        if "mlxspec_best" in c:
            b = c["mlxspec_best"]
            parts.append(f"mlxspec best k={b['k']} {b['tokens_per_s']:.2f} tok/s ({b['speedup']:.2f}x plain)")
        if "mlxspec_adaptive" in c:
            parts.append(f"adaptive {c['mlxspec_adaptive']['tokens_per_s']:.2f} tok/s")
        if "mlx-lm_best" in c:
            b = c["mlx-lm_best"]
            parts.append(f"mlx-lm best k={b['k']} {b['tokens_per_s']:.2f} tok/s; mlxspec best / mlx-lm best "
                         f"{c['best_vs_best']:.2f}; same k: "
                         + ", ".join(f"k={k} {v:.2f}" for k, v in c["same_k_ratio"].items()))
        lines.append(f"- {parts[0]} " + "; ".join(parts[1:]))
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: Path, plots: bool = True) -> list[Path]:
    """report.json, report.md and (with matplotlib) tokens_per_s.png, acceptance.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, indent=2))
    written[1].write_text(markdown(report))
    if plots:
        written += _plots(report, out_dir)
    return written


def _plots(report: dict, out_dir: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    temps = sorted({r["temperature"] for r in report["rows"]})
    fig, axes = plt.subplots(1, len(temps), figsize=(5 * len(temps), 4), squeeze=False)
    for ax, temp in zip(axes[0], temps):
        rows = [r for r in report["rows"] if r["temperature"] == temp]
        for engine in ("mlxspec", "mlx-lm"):
            fixed = sorted((r for r in rows if r["engine"] == engine and isinstance(r["k"], int)), key=lambda r: r["k"])
            if fixed:
                ax.plot([r["k"] for r in fixed], [r["tokens_per_s"] for r in fixed], "o-", label=f"{engine} measured")
        base = next((r["tokens_per_s"] for r in rows if r["engine"] == "mlxspec" and r["k"] == 0), None)
        pred = [(r["k"], r["predicted_speedup"] * base) for r in rows
                if r["engine"] == "mlxspec" and r.get("predicted_speedup") and base]
        if pred:
            ax.plot(*zip(*sorted(pred)), "x--", label="mlxspec predicted")
        ax.set(title=f"T = {temp:g}", xlabel="draft tokens k (0 = plain)", ylabel="tokens/s")
        ax.legend()
    fig.tight_layout()
    paths.append(out_dir / PLOT_FILES[0])
    fig.savefig(paths[-1], dpi=100)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in report["rows"]:
        if r.get("acceptance_per_position") and isinstance(r["k"], int) and r["k"] == max(
                x["k"] for x in report["rows"] if isinstance(x["k"], int)):
            acc = r["acceptance_per_position"]
            ax.plot(range(1, len(acc) + 1), acc, "o-", label=f"{r['engine']} T={r['temperature']:g}")
    ax.set(xlabel="draft position", ylabel="P(accepted through this position)", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / PLOT_FILES[1])
    fig.savefig(paths[-1], dpi=100)
    plt.close("all")
    return paths
