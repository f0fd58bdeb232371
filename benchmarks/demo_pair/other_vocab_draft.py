"""A draft with another tokenizer for the demo target, made without training from scratch:
the shipped distilled draft model (SmolLM2's byte-level BPE, 49,152 tokens) moved onto
the Mistral SentencePiece vocabulary (32,000 tokens, from mistral-common). Each
SentencePiece token's input embedding is the mean of the embeddings of the BPE tokens
that spell its text; its output row is the row of the first of those tokens (when the
draft's subset head scores that one); the blocks are kept. Then the acceptance per
position of this other-vocabulary pair, through mlxspec's own loop, next to the
same-vocabulary draft it came from, on the built-in prompts.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/demo_pair/other_vocab_draft.py --out /tmp/sp-draft
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from synthetic import mistral_tokenizer_file  # noqa: E402

import mlxspec  # noqa: E402
from mlxspec.demo import demo_target, demo_token_draft  # noqa: E402
from mlxspec.models import Model, SubsetHead  # noqa: E402
from mlxspec.prompts import BUILTIN_PROMPTS  # noqa: E402
from mlxspec.text.spelling import spell  # noqa: E402
from mlxspec.text.tokenizer import SentencePieceTokenizer  # noqa: E402


def moved(draft: Model, bpe: mlxspec.Tokenizer, sp: SentencePieceTokenizer, full_head: bool = False) -> Model:
    """The draft's blocks under SentencePiece embeddings and a subset head over SentencePiece
    ids; with `full_head`, a head over every id (rows the subset lacks: the token's input
    embedding, rescaled), which transformers can load as it is."""
    embed = np.array(draft.model.embed_tokens.weight)
    head = draft.lm_head
    rows = {int(t): i for i, t in enumerate(np.array(head.token_ids))}
    out_w = np.array(head.out_proj.weight)
    encode = lambda s: bpe.encode(s, add_bos=False)  # noqa: E731
    bpe_bytes = bpe.token_bytes()
    new_embed = np.tile(embed.mean(axis=0), (sp.vocab_size, 1))
    head_ids, head_rows = [], []
    for i, b in enumerate(sp.token_bytes()):
        if not b:
            continue
        ids, _ = spell(encode, bpe_bytes, b)
        if not ids:
            continue
        new_embed[i] = embed[ids].mean(axis=0)
        if ids[0] in rows:
            head_ids.append(i)
            head_rows.append(out_w[rows[ids[0]]])
    if full_head:
        scale = np.linalg.norm(out_w, axis=1).mean() / np.linalg.norm(new_embed, axis=1).mean()
        full = new_embed * scale
        full[head_ids] = np.stack(head_rows)
        head_ids, head_rows = list(range(sp.vocab_size)), list(full)
    args = replace(draft.args, vocab_size=sp.vocab_size, head_vocab_size=None if full_head else len(head_ids))
    model = Model(args)
    weights = dict(tree_flatten(draft.parameters()))
    weights = {k: v for k, v in weights.items() if not k.startswith(("lm_head", "model.embed_tokens"))}
    weights["model.embed_tokens.weight"] = mx.array(new_embed)
    if full_head:
        weights["lm_head.weight"] = mx.array(np.stack(head_rows))
    else:
        weights["lm_head.out_proj.weight"] = mx.array(np.stack(head_rows))
        weights["lm_head.token_ids"] = mx.array(head_ids, dtype=mx.int32)
    model.load_weights(list(weights.items()))
    assert isinstance(model.lm_head, SubsetHead) != full_head
    mx.eval(model.parameters())
    return model


def save(model: Model, sp_file: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    config = model.args.to_hf_config()
    if model.args.head_vocab_size:
        config["head_vocab_size"] = model.args.head_vocab_size
    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(sp_file, out / "tokenizer.model")


def acceptance(target, tokenizer, draft, prompts: list[str], n: int, temperature: float) -> dict:
    """Acceptance per position (accepted / drafted at each position) with a fixed k = 4."""
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=4, draft_policy="fixed")
    drafted, accepted = [0] * 4, [0] * 4
    for p, prompt in enumerate(prompts):
        stats = list(session.stream(prompt, max_tokens=n, chat=True, temperature=temperature, seed=p))[-1].stats
        for i in range(4):
            drafted[i] += stats.drafted_per_position[i]
            accepted[i] += stats.accepted_per_position[i]
    return {"per_position": [a / d if d else None for a, d in zip(accepted, drafted)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("-n", "--max-tokens", type=int, default=96)
    args = parser.parse_args()
    target, tokenizer = mlxspec.load(demo_target(), dtype=mx.float32, dequantize=True)
    same, bpe = mlxspec.load(demo_token_draft(), dtype=mx.float32, dequantize=True)
    sp = SentencePieceTokenizer(mistral_tokenizer_file())
    save(moved(same, bpe, sp), mistral_tokenizer_file(), args.out)
    other = mlxspec.load_draft(args.out, target, tokenizer, dtype=mx.float32)
    prompts = [p for k in ("chat", "code", "grounded") for p in BUILTIN_PROMPTS[k]]
    table = {name: {f"T={t:g}": acceptance(target, tokenizer, d, prompts, args.max_tokens, t) for t in (0.0, 1.0)}
             for name, d in (("same vocabulary (shipped draft model)", same),
                             ("other vocabulary (moved to Mistral SentencePiece)", other))}
    table["other vocabulary"] = mlxspec.drafts.describe_draft(other)
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
