"""Prompt lookup in two engines, acceptance per draft position at temperature 0 on the same
target (SmolLM2-135M-Instruct, fp32) and prompts: mlxspec's lookup drafting a fixed 10
tokens whenever it has a match, and transformers' `prompt_lookup_num_tokens=10` (torch CPU;
its candidate generator instrumented to record how many tokens it proposed and how many the
target kept). Speed does not compare across engines here; acceptance does.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/lookup_engines.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.demo import demo_target, smollm2_gguf  # noqa: E402
from mlxspec.prompts import BUILTIN_PROMPTS  # noqa: E402

K = 10  # transformers' default prompt_lookup_num_tokens


def per_position(rounds: list[tuple[int, int]], positions: int = 6) -> list[float | None]:
    """Conditional acceptance per position from (proposed, accepted) rounds: position i is
    tested when at least i + 1 tokens were proposed and the first i accepted."""
    out = []
    for i in range(positions):
        tested = [r for r in rounds if r[0] > i and r[1] >= i]
        out.append(sum(r[1] > i for r in tested) / len(tested) if tested else None)
    return out


def transformers_rounds(prompts: list[str], n: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """(proposed, accepted) per round of transformers' prompt lookup, and its greedy answers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation import candidate_generator as cg

    folder = Path(tempfile.mkdtemp()) / "smollm2-fp32"  # the demo target's weights, expanded, in the HF layout
    mlxspec.convert(smollm2_gguf(), folder, dtype="float32")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    rounds: list[tuple[int, int]] = []
    proposed: dict[str, int] = {}
    get, update = cg.PromptLookupCandidateGenerator.get_candidates, cg.PromptLookupCandidateGenerator.update_candidate_strategy

    def get_candidates(self, input_ids, **kwargs):
        out = get(self, input_ids, **kwargs)
        proposed["n"] = out[0].shape[1] - input_ids.shape[1]
        return out

    def update_candidate_strategy(self, input_ids, scores, num_matches):
        if proposed.get("n"):
            rounds.append((proposed["n"], int(num_matches)))
        return update(self, input_ids, scores, num_matches)

    cg.PromptLookupCandidateGenerator.get_candidates = get_candidates
    cg.PromptLookupCandidateGenerator.update_candidate_strategy = update_candidate_strategy
    answers = []
    for prompt in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        out = model.generate(ids, max_new_tokens=n, do_sample=False, prompt_lookup_num_tokens=K)
        answers.append(out[0, ids.shape[1]:].tolist())
    return rounds, answers


def mlxspec_rounds(prompts: list[str], n: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """The same for mlxspec's lookup (fixed K; a round without a match is a plain step)."""
    from mlxspec.engine import SpeculativeStats

    target, tokenizer = mlxspec.load(demo_target(), dtype=mx.float32, dequantize=True)
    session = mlxspec.Session(target, tokenizer, "ngram", num_draft_tokens=K, draft_policy="fixed")
    rounds: list[tuple[int, int]] = []
    record = SpeculativeStats.record

    def logged(self, k: int, accepted: int) -> None:
        if k:
            rounds.append((k, accepted))
        record(self, k, accepted)

    SpeculativeStats.record = logged
    answers = [[s.token for s in session.stream(prompt, max_tokens=n, chat=True)] for prompt in prompts]
    SpeculativeStats.record = record
    return rounds, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--max-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS / "lookup_engines")
    args = parser.parse_args()
    table = {}
    for category, kinds in {"grounded": ["grounded", "summarisation"], "open chat": ["chat"], "code": ["code"]}.items():
        prompts = [p for k in kinds for p in BUILTIN_PROMPTS[k]]
        ours, our_answers = mlxspec_rounds(prompts, args.max_tokens)
        hf, hf_answers = transformers_rounds(prompts, args.max_tokens)
        same = sum(a[: len(b)] == b[: len(a)] for a, b in zip(our_answers, hf_answers))
        table[category] = {"mlxspec": per_position(ours), "mlxspec_rounds": len(ours),
                           "transformers": per_position(hf), "transformers_rounds": len(hf),
                           "same_greedy_answers": f"{same}/{len(prompts)}"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(table, indent=1))
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
