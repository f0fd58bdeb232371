"""Feature drafts for the demo target trained by `mlxspec distill` at an equal time budget:
the target's last-layer feature alone (the recipe of the shipped draft), fused with the
outputs of lower blocks (EAGLE-3's multi-layer features), and either with training-time test
(the draft also trained on its own predicted features); the shipped draft evaluated on the
same held-out prompts for reference.

    python benchmarks/distill_compare.py [--minutes 8] [--variants NAME ...]

The target's answers are made once per set of layers read (and cached), then each variant
trains for --minutes. Writes benchmarks/results/distill/report.json and report.md (variants
measured before are kept).
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
VARIANTS = {  # name: (feature layers, unroll)
    "last layer": ("none", 1),
    "last layer + training-time test": ("none", 2),
    "multi-layer (auto)": ("auto", 1),
    "multi-layer (auto) + training-time test": ("auto", 2),
    "multi-layer (middle block only)": ([15], 1),
}
COMMON = dict(kind="feature", layers=2, head_vocab=8192, seq_len=256, max_new=128, batch=8, lr=3e-4, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget of each variant")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="which to run")
    options = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    target_dir = demo.demo_target()
    old = json.loads((OUT / "report.json").read_text()) if (OUT / "report.json").is_file() else {}
    old = old if isinstance(old.get("answers_seconds"), dict) and old.get("minutes") == options.minutes else {}
    report = {"minutes": options.minutes, "answers_seconds": old.get("answers_seconds", {}),
              "variants": old.get("variants", {})}
    for name in options.variants:
        layers, unroll = VARIANTS[name]
        started, tag = time.monotonic(), "-".join(map(str, layers)) if isinstance(layers, list) else layers
        distill(target_dir, OUT / f"data-{tag}", steps=1, force=True, feature_layers=layers, eval_prompts=1, eval_k=1,
                **COMMON)  # the answers (cached; answers keeping more blocks serve fewer)
        report["answers_seconds"][tag] = report["answers_seconds"].get(tag) or round(time.monotonic() - started)
        folder = distill(target_dir, OUT / f"{tag}-unroll{unroll}", steps=10**6, minutes=options.minutes, unroll=unroll,
                         feature_layers=layers, force=True, **COMMON)
        info = json.loads((folder / "training.json").read_text())
        report["variants"][name] = {"steps": info["curve"][-1][0], "positions": info["train_positions"],
                                    "feature_layers": info["options"]["feature_layers"], **info["evaluation"]}
        (OUT / "report.json").write_text(json.dumps(report, indent=2))
    target, tokenizer = load(target_dir, dtype=mx.float32, dequantize=True)
    shipped = load_draft(demo.demo_draft(), target, tokenizer, dtype=mx.float32, dequantize=True)
    held = split_prompts(None, COMMON["seed"])[1][:8]
    record = json.loads((demo.demo_draft() / "training.json").read_text())
    report["shipped"] = {f"acceptance_T{t:g}": acceptance(target, tokenizer, shipped, held, 4, t, 48, float("inf"))
                         for t in (0.0, 1.0)}
    report["shipped"]["made_by"] = (f"{record['curve'][-1][0]} steps, feature layers {record['options']['feature_layers']}"
                                    if "command" in record else "the earlier recipe, ~3.5 h")
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    (OUT / "report.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["| draft | training | held-out top-1 | acceptance per position, T = 0 | T = 1 |", "|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        lines.append(f"| {name} {v['feature_layers'] or ''} | {report['minutes']:g} min, {v['steps']} steps | {v['held_top1']:.3f} | "
                     f"{' / '.join(f'{a:.2f}' for a in v['acceptance_T0'])} | "
                     f"{' / '.join(f'{a:.2f}' for a in v['acceptance_T1'])} |")
    s = report["shipped"]
    lines.append(f"| shipped draft ({s['made_by']}) | | | {' / '.join(f'{a:.2f}' for a in s['acceptance_T0'])} | "
                 f"{' / '.join(f'{a:.2f}' for a in s['acceptance_T1'])} |")
    made = ", ".join(f"{tag}: {sec} s" for tag, sec in report["answers_seconds"].items())
    return "\n".join(lines) + (f"\n\nEach variant's data step (the target's answers, made once and cached; answers "
                                f"keeping more blocks serve fewer): {made}.\n")


if __name__ == "__main__":
    main()
