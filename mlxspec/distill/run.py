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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from ..adapters import read_adapter
from ..convert.atomic import atomic_dir, check_writable
from ..drafts.feature import draft_config
from ..errors import CheckpointError, InputError, InputTypeError
from ..hub import resolve
from ..load import load
from ..convert.sources import TOKENIZER_FILES
from ..paths import cache_dir, user_path
from ..reading import JSON_LIMIT, read_file
from ..selection import dequantize_default, weights_dtype
from ..validate import is_int
from .answers import answer_prompts, answers_folder
from .checks import check_for_target, check_options, context_of
from .drafts import feature_layers_for, feature_loss, head_matrix, head_subset, model_loss, new_draft
from .evaluate import acceptance, top1
from .prompts_file import check_prompts, numbered_prompts, split_prompts
from .train import Schedule, train
from .work import RECORD, check_work, work_folder, work_path

Progress = Callable[[str, int, int], None]  # (stage, done, total)
DEFAULT_HEAD_VOCAB = 8192  # or the target's whole vocabulary when smaller


@dataclass
class _Run:
    """What a run works with once every check has passed."""

    model: Any
    tokenizer: Any
    folder: Path  # the target's
    out: Path
    options: dict[str, Any]
    train_prompts: list
    held_prompts: list
    start: float
    report: Progress
    command: str | None
    force: bool


def distill(target: str | Path | Callable[[], str | Path], out: str | Path, *, kind: str = "feature",
            prompts: str | Path | None = None, minutes: float | None = None, steps: int = 2000, layers: int = 1,
            head_vocab: int | None = None, seq_len: int = 256, max_new: int = 128, unroll: int = 1,
            feature_layers: str | list[int] | None = "auto", batch: int = 8, lr: float = 3e-4, answer_batch: int = 16,
            eval_k: int = 4, eval_prompts: int = 8, checkpoint_every: int = 50, seed: int = 0,
            dequantize: bool | None = None, resume: bool = False, force: bool = False,
            progress: Progress | None = None, command: str | None = None, adapter: str | Path | None = None) -> Path:
    """Train a draft of `kind` ("feature" or "model") for `target` and write it to `out`
    (loadable with `--draft` / `load_draft`); see the module docstring. A feature draft reads
    the outputs of `feature_layers` beside the final feature (see `feature_layers_for`; by
    default EAGLE-3's low, middle and high blocks). The head scores `head_vocab` tokens (by
    default 8192, or the whole vocabulary when smaller). The target is loaded as `generate`
    loads it (`dequantize`: expanded to float32, by default on the CPU backend only; kept
    quantized, a 4-bit 7B target takes about 4 GB instead of 29). `progress(stage, done,
    total)` is called as each stage advances; `command` (the command line that started it)
    is recorded in training.json. Every option, every prompt and the destination are checked
    before any work (`checks`, `prompts_file`, `work`); `target` may be a function giving
    the target, called once the options have passed (the CLI's demo target is converted on
    first use); `adapter`, an mlx-lm adapter folder, is applied to the target. Returns `out`."""
    start = time.monotonic()
    options = dict(target=None, kind=kind, prompts=None if prompts is None else str(prompts), seed=seed,
                   layers=layers, head_vocab=head_vocab, seq_len=seq_len, max_new=max_new, unroll=unroll,
                   steps=steps, batch=batch, lr=lr, answer_batch=answer_batch, eval_k=eval_k, minutes=minutes,
                   checkpoint_every=checkpoint_every)
    check_options({**options, "eval_prompts": eval_prompts, "resume": resume, "force": force,
                   "dequantize": dequantize})
    checked, target = None if adapter is None else read_adapter(adapter), target() if callable(target) else target
    out, prompts_path = _paths(target, out, prompts, progress, command)
    sources = [target] + ([prompts_path] if prompts_path is not None else []) + ([checked.folder] if checked else [])
    options["target"], options["adapter"] = str(target), checked and checked.digest
    check_writable(out, force, sources=sources, kind="draft")
    work = work_path(out)
    check_work(work, resume, force, sources)
    numbered = numbered_prompts(prompts_path, seed)
    folder, model, tokenizer, options["dequantize"] = _target(target, dequantize, checked)
    check_for_target(options, model)
    options["head_vocab"] = head_vocab or min(DEFAULT_HEAD_VOCAB, model.args.vocab_size)
    options["feature_layers"] = _layers_read(kind, feature_layers, model.depth)
    check_prompts(numbered, tokenizer, context_of(model), max_new)
    train_prompts, held_prompts = split_prompts(numbered, seed)
    run = _Run(model, tokenizer, folder, out, options, train_prompts, held_prompts[:eval_prompts], start,
               progress or (lambda stage, done, total: None), command, force)
    with work_folder(work, options, resume, force, sources + [folder]) as work:
        _train_and_export(run, work)
    return out


def _paths(target: object, out: object, prompts: object, progress: object, command: object) -> tuple[Path, Path | None]:
    """The output folder and the prompts file as paths (`~` expanded, the names checked);
    the other arguments' types."""
    for name, value, kinds in (("target", target, (str, Path)), ("out", out, (str, Path)),
                               ("prompts", prompts, (str, Path, type(None))), ("command", command, (str, type(None)))):
        if not isinstance(value, kinds):
            raise InputTypeError(f"{name} must be {' or '.join(k.__name__ for k in kinds)}, got {type(value).__name__}")
    if progress is not None and not callable(progress):
        raise InputTypeError(f"progress must be a function (stage, done, total), got {type(progress).__name__}")
    return user_path(out, "output folder"), None if prompts is None else user_path(prompts, "prompts file")


def _train_and_export(run: _Run, work: Path) -> None:
    """Answers, training, evaluation, and the draft written to `run.out` with training.json."""
    options, model, kind = run.options, run.model, run.options["kind"]
    budget = math.inf if options["minutes"] is None else 60 * options["minutes"]
    data, held, ids = _data(model, run.tokenizer, run.folder, work, run.train_prompts, run.held_prompts,
                            options, run.start + 0.4 * budget, run.report)
    draft = new_draft(model, kind, options["layers"], ids, options["feature_layers"])
    head_w = head_matrix(model, ids)
    embed = model.model.embed_tokens
    loss = ((lambda d, f, t, v, noise: feature_loss(d, embed, head_w, f, t, v, noise, options["unroll"]))
            if kind == "feature" else (lambda d, f, t, v, noise: model_loss(d, head_w, f, t, v)))
    initial = top1(draft, kind, embed, head_w, held) if held else None
    schedule = Schedule(steps=options["steps"], batch=options["batch"], lr=options["lr"],
                        checkpoint_every=options["checkpoint_every"])
    score = (lambda: top1(draft, kind, embed, head_w, held)) if held else None
    curve = train(draft, loss, data, schedule, options["seed"], work / "train", run.start + 0.85 * budget, run.report,
                  score)
    evaluation = {"held_top1_before": initial, "held_top1": score() if score else None}
    for temperature in (0.0, 1.0):
        evaluation[f"acceptance_T{temperature:g}"] = acceptance(model, run.tokenizer, draft, run.held_prompts,
                                                                options["eval_k"], temperature, 48,
                                                                run.start + budget)
    info = {**({"command": run.command} if run.command else {}), "options": options,
            "runs": json.loads((work / RECORD).read_text())["runs"], "curve": curve.points,
            "held_top1_curve": curve.held, "stopped_by": curve.stopped_by, "train_rows": int(len(data["tokens"])),
            "train_positions": int(data["valid"].sum()), "evaluation": evaluation,
            "seconds": round(time.monotonic() - run.start, 1), "schedule": asdict(schedule)}
    export(draft, kind, run.folder, run.out, info, run.force)


def _target(target: str | Path, dequantize: bool | None, adapter: Any = None) -> tuple[Path, Any, Any, bool]:
    """(its folder, the target with `adapter` if any, its tokenizer, whether it was
    dequantized): loaded as `generate` loads it on this backend unless told."""
    folder = resolve(target)
    dequantize = dequantize_default(dequantize)
    model, tokenizer = load(folder, dtype=weights_dtype(dequantize), dequantize=dequantize, adapter=adapter)
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
    key = {**settings, **({} if options["dequantize"] else {"quantized": True}),
           **({"adapter": options["adapter"]} if options.get("adapter") else {})}  # an adapter's answers are its own
    pinned = work / "train" / "data.json"
    kept = _pinned(pinned, model.args.vocab_size) if pinned.is_file() else None
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


def _pinned(path: Path, vocab: int) -> dict[str, Any]:
    """A resumed run's data.json (the batches and head it started with), checked: a damaged
    one is one `CheckpointError`, never head ids past the vocabulary (MLX would crash on them)."""
    try:
        kept = json.loads(read_file(path, JSON_LIMIT))
    except (OSError, ValueError, RecursionError):
        kept = None
    ids = kept.get("head_ids") if isinstance(kept, dict) else None
    if not (isinstance(kept, dict) and is_int(kept.get("batches")) and kept["batches"] >= 1 and isinstance(ids, list)
            and ids and all(is_int(i) and 0 <= i < vocab for i in ids)):
        raise CheckpointError(f"{path.parent.parent}: the checkpoint to resume is damaged ({path.name} does not hold "
                              f"the batches and the head's token ids below {vocab}); --force starts the distillation over")
    return kept


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
