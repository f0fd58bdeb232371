"""Reports as files: the bench report as Markdown and JSON (+ plots), and the demo's table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .environment import environment
from .plots import plots as draw_plots


def markdown(report: dict) -> str:
    """The report as a Markdown table (one row per configuration and temperature)."""
    def f(x: Any, nd: int = 2) -> str:
        return "" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))

    lines = [f"Weights: {report['weights']}; KV cache: {report.get('kv_cache', 'full precision')}; "
             f"up to {report['max_tokens']} tokens per prompt, "
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
    if report.get("environment"):
        lines += ["", "Environment: " + ", ".join(f"{k}={v}" for k, v in report["environment"].items())]
    return "\n".join(lines) + "\n"


def write_tables(out_dir: Path, name: str, payload: dict, table: list[str]) -> Path:
    """`<name>.json` (the payload and the environment) and `<name>.md` (the Markdown table
    and the environment) in `out_dir`; returns the Markdown file."""
    payload = {**payload, "environment": payload.get("environment") or environment()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    env = ", ".join(f"{k}={v}" for k, v in payload["environment"].items())
    (out_dir / f"{name}.md").write_text("\n".join([f"# {name}", "", *table, "", f"Environment: {env}"]) + "\n")
    return out_dir / f"{name}.md"


def write_report(report: dict, out_dir: Path, plots: bool = True) -> list[Path]:
    """report.json, report.md and (with matplotlib) tokens_per_s.png, acceptance.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "report.json", out_dir / "report.md"]
    written[0].write_text(json.dumps(report, indent=2))
    written[1].write_text(markdown(report))
    if plots:
        written += draw_plots(report, out_dir)
    return written


def render_demo_table(rows: list[dict]) -> str:
    """The demo's side-by-side table as fixed-width text."""
    head = f"{'':<12}{'time (s)':>9}{'tokens':>8}{'tok/s':>8}{'acceptance':>12}{'tok/round':>11}{'speedup':>9}{'peak GB':>9}"
    lines = [head]
    for r in rows:
        acc = f"{r['acceptance']:.2f}" if "acceptance" in r else "-"
        per = f"{r['tokens_per_round']:.2f}" if "tokens_per_round" in r else "-"
        lines.append(f"{r['mode']:<12}{r['time_s']:>9.2f}{r['tokens']:>8}{r['tokens_per_s']:>8.1f}{acc:>12}"
                     f"{per:>11}{r['speedup']:>8.2f}x{r['peak_memory_gb']:>9.3f}")
    return "\n".join(lines)
