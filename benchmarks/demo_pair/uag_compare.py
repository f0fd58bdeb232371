"""The other-vocabulary pair in two engines: acceptance per draft position of mlxspec and of
transformers' Universal Assisted Generation (`assistant_tokenizer`: text re-encoding when
greedy, token-level intersection when sampling) on the same pair: SmolLM2-135M-Instruct
and the shipped draft model moved onto Mistral's SentencePiece vocabulary with a full output
layer (`other_vocab_draft.py`, which transformers can load), 4 drafted tokens a round in
both, same prompts. Speed does not compare across engines here; acceptance does.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/demo_pair/uag_compare.py --work /tmp/uag
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from other_vocab_draft import moved, save  # noqa: E402
from synthetic import mistral_tokenizer_file  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.demo import demo_token_draft, smollm2_gguf  # noqa: E402
from mlxspec.prompts import BUILTIN_PROMPTS  # noqa: E402
from mlxspec.text.tokenizer import SentencePieceTokenizer  # noqa: E402

K = 4


def per_position(rounds: list[tuple[int, int]], positions: int = K) -> list[float | None]:
    """Conditional acceptance per position from (proposed, accepted) rounds."""
    out = []
    for i in range(positions):
        tested = [r for r in rounds if r[0] > i and r[1] >= i]
        out.append(round(sum(r[1] > i for r in tested) / len(tested), 3) if tested else None)
    return out


def ours(target_dir: Path, draft_dir: Path, prompts: list[str], n: int, temperature: float) -> list[tuple[int, int]]:
    from mlxspec.engine import SpeculativeStats

    target, tokenizer = mlxspec.load(target_dir, dtype=mx.float32)
    draft = mlxspec.load_draft(draft_dir, target, tokenizer, dtype=mx.float32)
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=K, draft_policy="fixed")
    rounds, record = [], SpeculativeStats.record
    SpeculativeStats.record = lambda self, k, a: (rounds.append((k, a)) if k else None, record(self, k, a))[1]
    for p, prompt in enumerate(prompts):
        list(session.stream(prompt, max_tokens=n, chat=True, temperature=temperature, seed=p))
    SpeculativeStats.record = record
    return rounds


def theirs(target_dir: Path, draft_dir: Path, prompts: list[str], n: int, temperature: float) -> list[tuple[int, int]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation import candidate_generator as cg

    tok, dtok = AutoTokenizer.from_pretrained(target_dir), AutoTokenizer.from_pretrained(draft_dir)
    model = AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32)
    assistant = AutoModelForCausalLM.from_pretrained(draft_dir, dtype=torch.float32)
    assistant.generation_config.num_assistant_tokens = K
    assistant.generation_config.num_assistant_tokens_schedule = "constant"
    assistant.generation_config.assistant_confidence_threshold = 0.0
    if temperature:  # the assistant samples as the target does (its own config would draft greedily)
        assistant.generation_config.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    rounds, state = [], {"depth": 0, "n": 0}
    for cls in (cg.AssistedCandidateGeneratorDifferentTokenizers, cg.UniversalSpeculativeDecodingGenerator,
                cg.AssistedCandidateGenerator):
        _wrap(cls, rounds, state)
    for p, prompt in enumerate(prompts):
        torch.manual_seed(p)
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      return_tensors="pt")
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else dict(do_sample=False)
        model.generate(ids, assistant_model=assistant, tokenizer=tok, assistant_tokenizer=dtok,
                       max_new_tokens=n, **sampling)
    return rounds


def _wrap(cls, rounds: list, state: dict) -> None:
    """Record (proposed, accepted) per round from a candidate generator's own calls."""
    get, update = cls.__dict__.get("get_candidates"), cls.__dict__.get("update_candidate_strategy")

    def get_candidates(self, input_ids, **kwargs):
        state["depth"] += 1
        try:
            out = get(self, input_ids, **kwargs)
        finally:
            state["depth"] -= 1
        if state["depth"] == 0:
            state["n"] = out[0].shape[1] - input_ids.shape[1]
        return out

    def update_candidate_strategy(self, input_ids, scores, num_matches):
        if state["depth"] == 0 and state["n"] > 0:
            rounds.append((state["n"], int(num_matches)))
            state["n"] = 0
        return update(self, input_ids, scores, num_matches)

    if get is not None:
        cls.get_candidates = get_candidates
    if update is not None:
        cls.update_candidate_strategy = update_candidate_strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("-n", "--max-tokens", type=int, default=64)
    args = parser.parse_args()
    target_dir, draft_dir = args.work / "target", args.work / "draft"
    if not target_dir.is_dir():
        mlxspec.convert(smollm2_gguf(), target_dir, dtype="float32")
    if not draft_dir.is_dir():
        same, bpe = mlxspec.load(demo_token_draft(), dtype=mx.float32, dequantize=True)
        save(moved(same, bpe, SentencePieceTokenizer(mistral_tokenizer_file()), full_head=True),
             mistral_tokenizer_file(), draft_dir)
    prompts = [p for k in ("chat", "code", "grounded") for p in BUILTIN_PROMPTS[k]]
    table = {}
    for temperature in (0.0, 1.0):
        for name, run in (("mlxspec", ours), ("transformers UAG", theirs)):
            rounds = run(target_dir, draft_dir, prompts, args.max_tokens, temperature)
            table[f"T={temperature:g} {name}"] = {"rounds": len(rounds), "per_position": per_position(rounds)}
            print(name, temperature, table[f"T={temperature:g} {name}"], file=sys.stderr)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
