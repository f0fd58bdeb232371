"""Feature drafts for the demo target trained by `mlxspec distill` at an equal time budget:
features from the target's last layer read only as true features (the recipe of the shipped
draft) against the same plus training-time test (the draft also trained on its own predicted
features); the shipped draft evaluated on the same held-out prompts for reference.

    python benchmarks/distill_compare.py [--minutes 8]

The target's answers are made once (and cached), then each variant trains for --minutes.
Writes benchmarks/results/distill/report.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlxspec import demo, load, load_draft  # noqa: E402
from mlxspec.distill import distill  # noqa: E402
from mlxspec.distill.evaluate import acceptance  # noqa: E402
from mlxspec.distill.prompts_file import split_prompts  # noqa: E402

OUT = Path(__file__).parent / "results" / "distill"
VARIANTS = {"last-layer features, true features only": 1, "+ training-time test (2 passes)": 2}
COMMON = dict(kind="feature", layers=2, head_vocab=8192, seq_len=256, max_new=128, batch=8, lr=3e-4, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each variant")
    options = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    target_dir = demo.demo_target()
    started = time.monotonic()
    distill(target_dir, OUT / "data-pass", steps=1, force=True, **COMMON)  # the answers, cached for the variants
    report = {"answers_seconds": round(time.monotonic() - started), "minutes": options.minutes, "variants": {}}
    for name, unroll in VARIANTS.items():
        folder = distill(target_dir, OUT / f"unroll{unroll}", steps=10**6, minutes=options.minutes, unroll=unroll,
                         force=True, **COMMON)
        info = json.loads((folder / "training.json").read_text())
        report["variants"][name] = {"steps": info["curve"][-1][0], "positions": info["train_positions"],
                                    **info["evaluation"]}
    target, tokenizer = load(target_dir, dtype=mx.float32, dequantize=True)
    shipped = load_draft(demo.demo_draft(), target, tokenizer, dtype=mx.float32, dequantize=True)
    held = split_prompts(None, COMMON["seed"])[1][:8]
    report["shipped"] = {f"acceptance_T{t:g}": acceptance(target, tokenizer, shipped, held, 4, t, 48, float("inf"))
                         for t in (0.0, 1.0)}
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    (OUT / "report.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["| draft | training | held-out top-1 | acceptance per position, T = 0 | T = 1 |", "|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        lines.append(f"| {name} | {report['minutes']:g} min, {v['steps']} steps | {v['held_top1']:.3f} | "
                     f"{' / '.join(f'{a:.2f}' for a in v['acceptance_T0'])} | "
                     f"{' / '.join(f'{a:.2f}' for a in v['acceptance_T1'])} |")
    s = report["shipped"]
    lines.append(f"| shipped draft (old recipe, ~3.5 h) | | | {' / '.join(f'{a:.2f}' for a in s['acceptance_T0'])} | "
                 f"{' / '.join(f'{a:.2f}' for a in s['acceptance_T1'])} |")
    return "\n".join(lines) + f"\n\nThe target's answers: {report['answers_seconds']} s, made once.\n"


if __name__ == "__main__":
    main()
