"""The draft model (distill.py): the teacher's embedding, first blocks and final norm with a
head over a subset vocabulary; trained towards the teacher's top-K distributions, evaluated
by held-out loss and greedy acceptance per draft position, exported 4-bit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlxspec.models import Model, ModelArgs
from training import batches, fit, save_draft


def draft_args(teacher: Model, layers: int, head_vocab: int) -> ModelArgs:
    """The teacher's block shapes, `layers` deep, with a head over `head_vocab` tokens."""
    t = teacher.args
    return ModelArgs(hidden_size=t.hidden_size, num_hidden_layers=layers, intermediate_size=t.intermediate_size,
                     num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                     head_dim=t.head_dim, vocab_size=t.vocab_size, rms_norm_eps=t.rms_norm_eps,
                     rope_theta=t.rope_theta, max_position_embeddings=t.max_position_embeddings,
                     model_type=t.model_type, head_vocab_size=head_vocab)


def make_draft(teacher: Model, layers: int, head_ids: np.ndarray) -> Model:
    """The initial draft: the teacher's embedding, first `layers` blocks and final norm, and a
    head over `head_ids` whose rows start as those tokens' embedding rows."""
    draft = Model(draft_args(teacher, layers, len(head_ids)))
    teacher_params = dict(tree_flatten(teacher.parameters()))
    weights = {k: v for k, v in teacher_params.items()
               if k.startswith("model.embed_tokens") or k == "model.norm.weight"
               or any(k.startswith(f"model.layers.{i}.") for i in range(layers))}
    ids = mx.array(head_ids)
    weights["lm_head.out_proj.weight"] = teacher.model.embed_tokens.weight[ids]
    weights["lm_head.token_ids"] = ids
    draft.load_weights(list(weights.items()), strict=True)
    return draft


def loss_fn(draft: Model, tokens: mx.array, ids: mx.array, lps: mx.array, mask: mx.array,
            to_sub: mx.array) -> mx.array:
    """Cross-entropy of the draft's subset distribution to the teacher's renormalised top-K."""
    logq = nn.log_softmax(draft.lm_head.subset_logits(draft.model(tokens, None)), axis=-1)
    sub = to_sub[ids]  # [B, T, K] subset index, -1 when the head cannot produce it
    p = mx.exp(lps.astype(mx.float32)) * (sub >= 0)
    p = p / mx.maximum(p.sum(-1, keepdims=True), 1e-9)
    ce = -(p * mx.take_along_axis(logq, mx.maximum(sub, 0), axis=-1)).sum(-1)
    return (ce * mask).sum() / mx.maximum(mask.sum(), 1.0)


def train(args: argparse.Namespace, draft: Model, data: dict, to_sub: mx.array, run_dir: Path) -> list[dict]:
    """Phase 3: the blocks, norm and head rows train; the embedding and the head's token ids stay."""
    draft.model.embed_tokens.freeze()
    draft.lm_head.freeze(keys=["token_ids"], recurse=False)

    def report(step: int, running: float) -> dict:
        entry = {"step": step, "train_loss": running, **evaluate(draft, data, to_sub, quick=True)}
        print(f"\nstep {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in entry.items() if isinstance(v, float)),
              file=sys.stderr)
        return entry

    return fit(args, draft, lambda m, *b: loss_fn(m, *b, to_sub), lambda rng: batches(data["train"], args.batch, rng),
               "distilling", report, run_dir)


def evaluate(draft: Model, data: dict, to_sub: mx.array, quick: bool = False) -> dict:
    """Held-out loss on stdlib text, top-1 agreement, and greedy acceptance per draft position
    (k consecutive matches of the draft's argmax with the teacher's greedy answer)."""
    rows = data["held_text"][: 16 if quick else None]
    losses = []
    for i in range(0, len(rows), 8):
        b = [mx.array(np.stack([r[c] for r in rows[i:i + 8]])) for c in range(4)]
        losses.append(loss_fn(draft, *b, to_sub).item())
    matches = []
    for row, p, n_t in data["held_greedy"]:
        tokens, ids, lps, mask = row
        pred = draft(mx.array(tokens[None]))[0]
        top = np.array(mx.argmax(pred, axis=-1))
        teacher_top = ids[np.arange(len(ids)), np.argmax(lps.astype(np.float32), axis=-1)]
        matches.append((top == teacher_top)[p - 1:p - 1 + n_t])
    acc = acceptance_by_position(matches, 8)
    return {"held_loss": float(np.mean(losses)), "top1": float(np.mean(np.concatenate(matches))),
            **{f"accept@{j + 1}": float(a) for j, a in enumerate(acc)}}


def acceptance_by_position(matches: list[np.ndarray], k_max: int) -> list[float]:
    """P(first j draft tokens all accepted), j = 1..k_max, over all start positions."""
    out = []
    for j in range(1, k_max + 1):
        runs = [m[s:s + j].all() for m in matches for s in range(len(m) - j + 1)]
        out.append(float(np.mean(runs)) if runs else 0.0)
    return out


def export(draft: Model, teacher_dir: Path, out: Path, info: dict, bits: int, group_size: int) -> None:
    """Phase 5: the projections and the embedding quantized (affine, `bits`), the rest as trained."""
    weights = dict(tree_flatten(draft.parameters()))
    saved: dict[str, mx.array] = {}
    quant = {"group_size": group_size, "bits": bits, "mode": "affine"}
    for name, w in weights.items():
        if name.endswith(("_proj.weight", "embed_tokens.weight")):
            q, s, b = mx.quantize(w, group_size=group_size, bits=bits)
            base = name[: -len(".weight")]
            saved.update({f"{base}.weight": q, f"{base}.scales": s.astype(mx.float16),
                          f"{base}.biases": b.astype(mx.float16)})
        else:
            saved[name] = w
    config = draft.args.to_hf_config()
    config["quantization"] = quant
    config["quantization_config"] = dict(quant)
    save_draft(out, saved, config, info, tokenizer_from=teacher_dir)
