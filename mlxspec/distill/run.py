"""`distill`: a draft for any target mlxspec loads, trained on this machine.

Stages, all resumable: the target answers the training prompts (`answers`, kept in the
mlxspec cache under a key of the target, prompts and settings, so other drafts trained on the
same data reuse them), the draft trains (`train`, checkpoints in the work folder `OUT.work`), it is evaluated on held-out
prompts (`evaluate`) and written to OUT with `training.json` (the arguments, the loss curve,
the evaluation, the stages each run continued from). A time budget covers everything: the
answers may use 40% of it, training runs to 85%, evaluation takes what is left.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..convert.atomic import atomic_dir, check_writable
from ..drafts.feature import draft_config
from ..errors import InputError, OutputError
from ..hub import resolve
from ..load import load
from ..convert.sources import TOKENIZER_FILES
from ..validate import is_int
from ..paths import cache_dir
from ..selection import dequantize_default, weights_dtype
from .answers import answer_prompts, answers_folder
from .drafts import KINDS, feature_layers_for, feature_loss, head_matrix, head_subset, model_loss, new_draft
from .evaluate import acceptance, top1
from .prompts_file import split_prompts
from .train import Schedule, train

Progress = Callable[[str, int, int], None]  # (stage, done, total)
# Settings the data and the draft's shape depend on: a resumed run must keep them.
_FIXED = ("target", "kind", "prompts", "seed", "layers", "head_vocab", "seq_len", "max_new", "unroll", "feature_layers",
          "dequantize")


def _check(options: dict[str, Any]) -> None:
    if options["kind"] not in KINDS:
        raise InputError(f"--kind must be one of {', '.join(KINDS)}, got {options['kind']!r}")
    for name in ("layers", "head_vocab", "seq_len", "max_new", "unroll", "steps", "batch", "answer_batch", "eval_k",
                 "checkpoint_every"):
        if not is_int(options[name]) or options[name] < 1:
            raise InputError(f"{name} must be a positive integer, got {options[name]!r}")
    minutes = options["minutes"]
    if minutes is not None and not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise InputError(f"--minutes must be a number > 0, got {minutes!r}")


def _work_folder(out: Path, options: dict[str, Any], resume: bool, force: bool) -> Path:
    """`OUT.work`: continued with `resume` (same data settings), started over with `force`."""
    work = out.with_name(out.name + ".work")
    record = work / "run.json"
    if work.exists() and not record.is_file():
        raise OutputError(f"{work} exists and was not written by mlxspec distill; move it away")
    if record.is_file() and not resume:
        if not force:
            raise OutputError(f"{work} holds a started distillation: --resume continues it, --force starts over")
        shutil.rmtree(work)
    if resume and record.is_file():
        before = json.loads(record.read_text())["options"]
        changed = [k for k in _FIXED if k in before and before[k] != options[k]]  # (settings it recorded)
        if changed:
            raise InputError(f"--resume: {changed[0]} differs from the run in {work} ({before.get(changed[0])!r}); "
                             "keep it, or start over with --force")
    work.mkdir(parents=True, exist_ok=True)
    runs = json.loads(record.read_text())["runs"] if record.is_file() else []
    record.write_text(json.dumps({"options": options, "runs": runs + [{"steps": options["steps"],
                                                                        "minutes": options["minutes"]}]}))
    return work


def distill(target: str | Path, out: str | Path, *, kind: str = "feature", prompts: str | Path | None = None,
            minutes: float | None = None, steps: int = 2000, layers: int = 1, head_vocab: int = 8192,
            seq_len: int = 256, max_new: int = 128, unroll: int = 1, feature_layers: str | list[int] | None = "auto",
            batch: int = 8, lr: float = 3e-4, answer_batch: int = 16, eval_k: int = 4, eval_prompts: int = 8,
            checkpoint_every: int = 50, seed: int = 0,
            dequantize: bool | None = None, resume: bool = False, force: bool = False,
            progress: Progress | None = None, command: str | None = None) -> Path:
    """Train a draft of `kind` ("feature" or "model") for `target` and write it to `out`
    (loadable with `--draft` / `load_draft`); see the module docstring. A feature draft reads
    the outputs of `feature_layers` beside the final feature (see `feature_layers_for`; by
    default EAGLE-3's low, middle and high blocks). The target is loaded as `generate` loads
    it (`dequantize`: expanded to float32, by default on the CPU backend only; kept quantized,
    a 4-bit 7B target takes about 4 GB instead of 29). `progress(stage, done, total)` is
    called as each stage advances; `command` (the command line that started it) is recorded
    in training.json. Returns `out`."""
    start = time.monotonic()
    options = dict(target=str(target), kind=kind, prompts=None if prompts is None else str(prompts), seed=seed,
                   layers=layers, head_vocab=head_vocab, seq_len=seq_len, max_new=max_new, unroll=unroll,
                   steps=steps, batch=batch, lr=lr, answer_batch=answer_batch, eval_k=eval_k, minutes=minutes,
                   checkpoint_every=checkpoint_every)
    _check(options)
    out = Path(out).expanduser()
    check_writable(out, force, sources=[target], kind="draft")
    train_prompts, held_prompts = split_prompts(None if prompts is None else Path(prompts).expanduser(), seed)
    folder, model, tokenizer, options["dequantize"] = _target(target, dequantize)
    options["feature_layers"] = _layers_read(kind, feature_layers, model.depth)
    work = _work_folder(out, options, resume, force)
    report = progress or (lambda stage, done, total: None)
    budget = math.inf if minutes is None else 60 * minutes
    data, held, ids = _data(model, tokenizer, folder, work, train_prompts, held_prompts[:eval_prompts],
                            options, start + 0.4 * budget, report)
    draft = new_draft(model, kind, layers, ids, options["feature_layers"])
    head_w = head_matrix(model, ids)
    embed = model.model.embed_tokens
    loss = ((lambda d, f, t, v, noise: feature_loss(d, embed, head_w, f, t, v, noise, unroll)) if kind == "feature"
            else (lambda d, f, t, v, noise: model_loss(d, head_w, f, t, v)))
    initial = top1(draft, kind, embed, head_w, held) if held else None
    schedule = Schedule(steps=steps, batch=batch, lr=lr, checkpoint_every=checkpoint_every)
    score = (lambda: top1(draft, kind, embed, head_w, held)) if held else None
    curve = train(draft, loss, data, schedule, seed, work / "train", start + 0.85 * budget, report, score)
    evaluation = {"held_top1_before": initial, "held_top1": score() if score else None}
    for temperature in (0.0, 1.0):
        evaluation[f"acceptance_T{temperature:g}"] = acceptance(model, tokenizer, draft, held_prompts[:eval_prompts],
                                                                eval_k, temperature, 48, start + budget)
    info = {**({"command": command} if command else {}), "options": options,
            "runs": json.loads((work / "run.json").read_text())["runs"], "curve": curve.points, "held_top1_curve": curve.held, "stopped_by": curve.stopped_by, "train_rows": int(len(data["tokens"])),
            "train_positions": int(data["valid"].sum()), "evaluation": evaluation,
            "seconds": round(time.monotonic() - start, 1), "schedule": asdict(schedule)}
    export(draft, kind, folder, out, info, force)
    return out


def _target(target: str | Path, dequantize: bool | None) -> tuple[Path, Any, Any, bool]:
    """(its folder, the target, its tokenizer, whether it was dequantized): loaded as
    `generate` loads it on this backend unless told."""
    folder = resolve(target)
    dequantize = dequantize_default(dequantize)
    model, tokenizer = load(folder, dtype=weights_dtype(dequantize), dequantize=dequantize)
    return folder, model, tokenizer, dequantize


def _layers_read(kind: str, feature_layers: str | list[int] | None, depth: int) -> list[int] | None:
    """The target blocks the draft reads beside the final feature (a model draft reads none)."""
    if kind != "feature" and feature_layers not in (None, "none", "auto"):
        raise InputError("--feature-layers is for feature drafts (--kind feature)")
    return feature_layers_for(feature_layers, depth) if kind == "feature" else None


def _data(model: Any, tokenizer: Any, folder: Path, work: Path, train_prompts: list, held_prompts: list,
          options: dict[str, Any], deadline: float, report: Progress) -> tuple[dict, dict, np.ndarray]:
    """(training rows, held-out rows, the head's token ids): the target's answers (cached),
    and on a resumed run exactly the batches and head training started with."""
    settings = dict(batch=options["answer_batch"], max_new=options["max_new"], seq_len=options["seq_len"],
                    seed=options["seed"])
    taps = tuple(options["feature_layers"] or ())
    key = {**settings, **({} if options["dequantize"] else {"quantized": True})}
    pinned = work / "train" / "data.json"
    kept = json.loads(pinned.read_text()) if pinned.is_file() else None
    place, held_taps = answers_folder(cache_dir(), folder, train_prompts, key, taps)
    data = answer_prompts(model, tokenizer, train_prompts, place, **settings, deadline=deadline, progress=report,
                          limit=None if kept is None else kept["batches"], taps=taps, held=held_taps)
    held_settings = {**settings, "seed": options["seed"] + 1}
    place, held_taps = answers_folder(cache_dir(), folder, held_prompts, {**key, "seed": options["seed"] + 1}, taps)
    held = answer_prompts(model, tokenizer, held_prompts, place, **held_settings, deadline=math.inf, progress=report,
                          taps=taps, held=held_taps)
    if kept is not None:
        return data, held, np.array(kept["head_ids"], dtype=np.int32)
    ids = head_subset(data["tokens"], data["valid"], options["head_vocab"], model.args.vocab_size,
                      list(tokenizer.eos_ids))
    pinned.parent.mkdir(parents=True, exist_ok=True)
    pinned.write_text(json.dumps({"batches": data["batches"], "head_ids": ids.tolist()}))
    return data, held, ids


def export(draft: Any, kind: str, target_folder: Path, out: Path, info: dict, force: bool) -> None:
    """The draft folder: weights (float16: half the disk of float32; `load_draft` gives the
    dtype asked), config.json (a feature draft's says `"draft_type": "eagle"`), training.json,
    and for a model draft the target's tokenizer files."""
    weights = {k: v.astype(mx.float16) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in tree_flatten(draft.parameters())}
    config = draft_config(draft) if kind == "feature" else draft.args.to_hf_config()
    with atomic_dir(out, force, sources=[target_folder], kind="draft") as tmp:
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "training.json").write_text(json.dumps(info, indent=2))
        for name in TOKENIZER_FILES if kind == "model" else ():
            if (target_folder / name).is_file():
                shutil.copy(target_folder / name, tmp / name)
