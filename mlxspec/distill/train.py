"""The training loop: AdamW with warm-up and cosine decay, one compiled step per batch,
checkpoints that a killed run resumes from, and a time budget it stops at.

A run is reproducible step by step: the rows of step s and the noise on its input features
come from (seed, s) alone, so a run resumed from a checkpoint at step c replays steps
c+1.. exactly as the uninterrupted run took them and ends with the same weights.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..convert.safetensors_io import SafetensorsReader
from ..errors import CheckpointError
from ..reading import JSON_LIMIT, read_file
from ..validate import is_int

Progress = Callable[[str, int, int], None]


@dataclass
class Schedule:
    """How long and how fast: steps, rows a step, peak learning rate, warm-up steps, noise on
    input features, checkpoint interval."""

    steps: int = 2000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 50
    noise: float = 0.05
    checkpoint_every: int = 50


@dataclass
class Curve:
    """What training recorded: (step, mean loss of the steps since the last point) every 10
    steps, (step, held-out score) at every checkpoint when there is a score, and why it stopped."""

    points: list[list[float]] = field(default_factory=list)
    held: list[list[float]] = field(default_factory=list)
    stopped_by: str = ""


def optimizer(schedule: Schedule) -> optim.Optimizer:
    warmup = min(schedule.warmup, max(schedule.steps - 1, 1))
    lr = optim.join_schedules([optim.linear_schedule(1e-7, schedule.lr, warmup),
                               optim.cosine_decay(schedule.lr, max(schedule.steps - warmup, 1), schedule.lr * 0.05)],
                              [warmup])
    return optim.AdamW(learning_rate=lr, weight_decay=0.0)


def batch_rows(seed: int, step: int, rows: int, batch: int) -> np.ndarray:
    """The rows of step `step`: a function of (seed, step) only."""
    return np.sort(np.random.default_rng([seed, step]).choice(rows, size=min(batch, rows), replace=False))


def save_checkpoint(folder: Path, draft: nn.Module, opt: optim.Optimizer, step: int, curve: Curve) -> None:
    """Weights and optimizer state in files named by the step, then `state.json` naming that
    step (replaced atomically): a kill at any point leaves the last complete checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / f"weights-{step}.safetensors"), dict(tree_flatten(draft.trainable_parameters())))
    mx.save_safetensors(str(folder / f"optimizer-{step}.safetensors"), dict(tree_flatten(opt.state)))
    (folder / "state.tmp.json").write_text(json.dumps({"step": step, "curve": curve.points, "held": curve.held}))
    (folder / "state.tmp.json").replace(folder / "state.json")
    for old in [*folder.glob("weights-*.safetensors"), *folder.glob("optimizer-*.safetensors")]:
        if old.stem.split("-")[-1] != str(step):
            old.unlink()


def has_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a complete checkpoint, which a resumed run continues from."""
    return (folder / "state.json").is_file()


def read_state(folder: Path) -> dict[str, Any]:
    """The state.json of the checkpoint in `folder`, checked, with its weight and optimizer
    files checked whole (each header against the file): a checkpoint damaged or edited by hand
    is one `CheckpointError`, never a crash of MLX halfway through loading it."""
    try:
        state = json.loads(read_file(folder / "state.json", JSON_LIMIT))
    except (OSError, ValueError, RecursionError):
        raise _damaged(folder, "state.json is not readable JSON") from None
    if not (isinstance(state, dict) and is_int(state.get("step")) and state["step"] >= 1
            and isinstance(state.get("curve"), list) and isinstance(state.get("held", []), list)):
        raise _damaged(folder, "state.json does not hold a step >= 1 and its curves")
    for name in ("weights", "optimizer"):
        try:
            SafetensorsReader(folder / f"{name}-{state['step']}.safetensors")
        except CheckpointError as exc:
            raise _damaged(folder, str(exc)) from None
    return state


def _damaged(folder: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{folder.parent}: the checkpoint to resume is damaged ({what}); "
                           "--force starts the distillation over")


def load_checkpoint(folder: Path, draft: nn.Module, opt: optim.Optimizer, curve: Curve) -> int:
    """The step a checkpoint in `folder` reached (its weights and optimizer state loaded, each
    tensor checked against the draft's), or 0."""
    if not has_checkpoint(folder):
        return 0
    state = read_state(folder)
    reference = optim.AdamW(learning_rate=0.0)
    reference.init(draft.trainable_parameters())
    loaded = {}
    for name, expected in (("weights", draft.trainable_parameters()), ("optimizer", reference.state)):
        tensors = mx.load(str(folder / f"{name}-{state['step']}.safetensors"))
        wrong = [k for k, v in tree_flatten(expected) if k != "step" and (k not in tensors or tensors[k].shape != v.shape)]
        if wrong:
            raise _damaged(folder, f"{name}-{state['step']}.safetensors does not fit this draft: {wrong[0]!r}")
        loaded[name] = tensors
    draft.load_weights(list(loaded["weights"].items()), strict=False)
    opt.state = tree_unflatten(list(loaded["optimizer"].items()))
    curve.points, curve.held = state["curve"], state.get("held", [])
    return state["step"]


def train(draft: nn.Module, loss: Callable[..., mx.array], data: dict[str, np.ndarray], schedule: Schedule,
          seed: int, folder: Path, deadline: float, progress: Progress,
          score: Callable[[], float] | None = None) -> Curve:
    """Train `draft`'s unfrozen weights on `loss(draft, features, tokens, valid, noise)` over
    rows of `data`, resuming from and checkpointing to `folder`, until `schedule.steps` or
    `deadline` (time.monotonic()); `score()` (a held-out measure) is recorded at every checkpoint."""
    opt, curve = optimizer(schedule), Curve()
    step = load_checkpoint(folder, draft, opt, curve)
    state = [draft.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def update(*batch: mx.array) -> mx.array:
        value, grads = nn.value_and_grad(draft, loss)(draft, *batch)
        opt.update(draft, optim.clip_grad_norm(grads, 1.0)[0])
        return value

    window: list[float] = []
    while step < schedule.steps and time.monotonic() < deadline:
        idx = batch_rows(seed, step, len(data["tokens"]), schedule.batch)
        f = mx.array(data["features"][idx].astype(np.float32))
        noise = schedule.noise * mx.random.normal((f.shape[0], f.shape[1] - 1, draft.args.hidden_size),
                                                  key=mx.random.key(seed * 1_000_003 + step))
        value = update(f, mx.array(data["tokens"][idx]), mx.array(data["valid"][idx]), noise)
        mx.eval(value, state)
        step += 1
        window.append(value.item())
        if step % 10 == 0 or step == schedule.steps:
            curve.points.append([step, sum(window) / len(window)])
            window = []
        progress("training the draft", step, schedule.steps)
        if step % schedule.checkpoint_every == 0:
            if score is not None:
                curve.held.append([step, round(score(), 4)])
            save_checkpoint(folder, draft, opt, step, curve)
    curve.stopped_by = "steps" if step >= schedule.steps else "time budget"
    save_checkpoint(folder, draft, opt, step, curve)
    return curve
