"""Training machinery both drafts share: the optimizer schedule, shuffled batches, the
resumable training loop with its checkpoints and progress line, and the exported folder."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlxspec.convert.atomic import atomic_dir


def progress(label: str, done: int, total: int, extra: str = "") -> None:
    """One progress bar on stderr, redrawn in place until `done` reaches `total`."""
    width = 30
    filled = int(width * done / max(total, 1))
    end = "\n" if done >= total else "\r"
    print(f"{label:<40} [{'#' * filled}{'.' * (width - filled)}] {extra}", end=end, file=sys.stderr, flush=True)


def make_optimizer(args: argparse.Namespace) -> optim.Optimizer:
    """AdamW, linear warm-up to --lr, then cosine decay to 5% of it at --steps."""
    schedule = optim.join_schedules(
        [optim.linear_schedule(1e-6, args.lr, args.warmup), optim.cosine_decay(args.lr, args.steps - args.warmup, args.lr * 0.05)],
        [args.warmup])
    return optim.AdamW(learning_rate=schedule, weight_decay=0.0)


def batches(rows: list, batch: int, rng: random.Random) -> Iterator[tuple[mx.array, ...]]:
    """Endless batches of `batch` rows (tuples of 4 arrays), stacked per field; the order is
    reshuffled every pass and a last partial batch is skipped."""
    order = list(range(len(rows)))
    while True:
        rng.shuffle(order)
        for i in range(0, len(order) - batch + 1, batch):
            picked = [rows[j] for j in order[i:i + batch]]
            yield tuple(mx.array(np.stack([r[c] for r in picked])) for c in range(4))


def resume(draft: nn.Module, opt: optim.Optimizer, run_dir: Path) -> tuple[int, list[dict]]:
    """Load the run's last checkpoint (weights and optimizer state) if there is one:
    (step reached, evaluation log so far)."""
    ckpt, state_file = run_dir / "draft.safetensors", run_dir / "train_state.json"
    if not (ckpt.is_file() and state_file.is_file()):
        return 0, []
    state = json.loads(state_file.read_text())
    draft.load_weights(str(ckpt), strict=False)
    opt.state = tree_unflatten(list(mx.load(str(run_dir / "opt_state.safetensors")).items()))
    print(f"resumed at step {state['step']}", file=sys.stderr)
    return state["step"], state["log"]


def checkpoint(draft: nn.Module, opt: optim.Optimizer, run_dir: Path, step: int, log: list[dict]) -> None:
    """Save what `resume` reads back."""
    mx.save_safetensors(str(run_dir / "draft.safetensors"), dict(tree_flatten(draft.parameters())))
    mx.save_safetensors(str(run_dir / "opt_state.safetensors"), dict(tree_flatten(opt.state)))
    (run_dir / "train_state.json").write_text(json.dumps({"step": step, "log": log}))


def compiled_step(model: nn.Module, opt: optim.Optimizer, loss_and_grad: Callable) -> Callable[..., mx.array]:
    """One compiled training step on a batch: loss and gradients, clipped to norm 1, update."""
    state = [model.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(*batch: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, *batch)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        opt.update(model, grads)
        return loss

    return step_fn


def fit(args: argparse.Namespace, model: nn.Module, loss: Callable[..., mx.array],
        stream: Callable[[random.Random], Iterator[tuple[mx.array, ...]]], label: str,
        report: Callable[[int, float], dict], run_dir: Path) -> list[dict]:
    """Train `model`'s unfrozen weights on `loss` (model, *batch) over the batches of
    `stream(rng)` up to --steps, resuming from and checkpointing to `run_dir`. Every
    --eval-every steps and at the end, `report(step, smoothed loss)` gives the log entry."""
    opt = make_optimizer(args)
    step, log = resume(model, opt, run_dir)
    step_fn = compiled_step(model, opt, nn.value_and_grad(model, loss))
    batch_iter = stream(random.Random(args.seed * 7 + step))
    start, running, first_step = time.time(), None, step
    while step < args.steps:
        value = step_fn(*next(batch_iter))
        mx.eval(value, model.trainable_parameters(), opt.state)
        step += 1
        running = value.item() if running is None else 0.95 * running + 0.05 * value.item()
        elapsed = time.time() - start
        progress(label, step, args.steps, f"loss {running:.3f}, {elapsed:.0f} s, "
                 f"{elapsed / (step - first_step):.2f} s/step")
        if step % args.eval_every == 0 or step == args.steps:
            log.append(report(step, running))
            checkpoint(model, opt, run_dir, step, log)
    return log


def save_draft(out: Path, weights: dict[str, mx.array], config: dict, info: dict,
               tokenizer_from: Path | None = None) -> None:
    """Write an exported draft folder atomically: model.safetensors, config.json,
    training.json (`info`) and, from `tokenizer_from`, the tokenizer files."""
    with atomic_dir(out, force=True) as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        for f in ("tokenizer.json", "tokenizer_config.json") if tokenizer_from else ():
            shutil.copy(tokenizer_from / f, tmp / f)
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
