"""The work folder `OUT.work` of a distillation: its resumable state (`run.json`, the data
it trains on, training checkpoints under `train/`).

mlxspec creates it with the `.mlxspec` marker of kind "distill-work" and touches an existing
one only when it carries that marker: a folder of that name without it (the user's own,
or one an mlxspec before the marker wrote) is never resumed, started over or deleted, and
no file name inside it (`run.json`) stands in for the marker. A run that fails leaves the
folder only when `--resume` can use it, i.e. when it holds a training checkpoint; otherwise
it is removed, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..convert.atomic import MARKER, check_not_a_source, mark, written_kind
from ..errors import InputError, OutputError
from .train import has_checkpoint, read_state

KIND = "distill-work"
RECORD = "run.json"
# Settings the data and the draft's shape depend on: a resumed run must keep them.
FIXED = ("target", "kind", "prompts", "seed", "layers", "head_vocab", "seq_len", "max_new", "unroll", "feature_layers",
         "dequantize", "adapter")


def work_path(out: Path) -> Path:
    """`OUT.work`, beside OUT."""
    return out.with_name(out.name + ".work")


def check_work(work: Path, resume: bool, force: bool, sources: Iterable[str | Path] = ()) -> None:
    """Before any work: whether this run may use `work` (see the module docstring); never
    when it is or holds one of the `sources` (the target, the prompts file)."""
    check_not_a_source(work, sources)
    if not work.exists() and not work.is_symlink():
        return
    if work.is_symlink() or not work.is_dir():
        raise OutputError(f"{work} exists and is not a folder; move it away or choose another output folder")
    if not any(work.iterdir()):
        return  # empty: nothing to lose
    kind = written_kind(work)
    if kind is None:
        before = " (nor has the work folder of an earlier mlxspec)" if (work / RECORD).exists() else ""
        raise OutputError(f"{work} has no {MARKER} marker of mlxspec distill{before}: it is never resumed, started "
                          "over or deleted; remove it yourself or choose another output folder")
    if kind != KIND:
        raise OutputError(f"{work} holds an mlxspec {kind}, not a distillation's work folder; "
                          "remove it yourself or choose another output folder")
    if not resume and not force:
        raise OutputError(f"{work} holds a started distillation: --resume continues it, --force starts over")
    if resume and has_checkpoint(work / "train"):
        read_state(work / "train")  # a damaged checkpoint is refused before any work


@contextmanager
def work_folder(work: Path, options: dict[str, Any], resume: bool, force: bool,
                sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """`work` opened for this run: continued with `resume` (same FIXED settings), else
    started over (with `force`) or created, marked, with this run added to its record.
    When the block fails, the folder is removed unless it holds a checkpoint."""
    check_work(work, resume, force, sources)
    ours = written_kind(work) == KIND
    try:
        runs = _earlier_runs(work, options) if ours and resume else []
        if ours and not resume:
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        mark(work, KIND)
        (work / RECORD).write_text(json.dumps({"options": options, "runs": runs + [
            {"steps": options["steps"], "minutes": options["minutes"]}]}))
    except OSError as exc:
        _discard(work)
        raise OutputError(f"{exc.filename or work}: {exc.strerror or exc}; nothing was trained") from None
    try:
        yield work
    except BaseException:
        _discard(work)
        raise


def _earlier_runs(work: Path, options: dict[str, Any]) -> list:
    """The runs `work` records, after checking that this one keeps their FIXED settings."""
    try:
        record = json.loads((work / RECORD).read_text())
        before, runs = record["options"], list(record["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputError(f"{work / RECORD} cannot be read; --force starts the distillation over") from None
    changed = [k for k in FIXED if k in before and before[k] != options[k]]  # (settings it recorded)
    if changed:
        raise InputError(f"--resume: {changed[0]} differs from the run in {work} ({before.get(changed[0])!r}); "
                         "keep it, or start over with --force")
    return runs


def _discard(work: Path) -> None:
    """Remove `work` unless `--resume` can continue from it (it holds a checkpoint)."""
    if written_kind(work) == KIND and not has_checkpoint(work / "train"):
        shutil.rmtree(work, ignore_errors=True)
