"""What a hostile user found in the files mlxspec reads and writes, each case stated as the
contract it broke: a file that never ends or is damaged is one `error:` line (or, in a cache,
answered again), never a hang, an internal error or a crash of MLX; and nothing is lost:
no write through a link, nothing deleted that mlxspec did not write."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec.cli as cli
from hostile_inputs import endless, one_error_line, tiny_model
from mlxspec.arguments import run
from mlxspec.convert.atomic import atomic_dir, mark, written_by_mlxspec
from mlxspec.errors import OutputError

DEAD = 9_999_999  # above Linux's largest pid (2**22): never a live process


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny random Mistral in HF layout with the real tokenizer."""
    return tiny_model(tmp_path_factory.mktemp("hostile") / "model")


def a_folder(path: Path, marked: bool = False) -> Path:
    """A folder holding a file of the user's, with mlxspec's marker if `marked`."""
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    if marked:
        mark(path, "model")
    return path


def test_only_mlxspecs_leftovers_of_killed_runs_are_removed(tmp_path):
    out = tmp_path / "out"
    theirs = a_folder(tmp_path / f".out.mlxspec-tmp-{DEAD}")  # a name like mlxspec's, no marker
    ours = a_folder(tmp_path / f".out.mlxspec-tmp-{DEAD - 1}", marked=True)
    odd = a_folder(tmp_path / f".out.mlxspec-tmp-{'9' * 30}", marked=True)  # not a pid: left alone
    with atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (theirs / "notes.txt").read_text() == "mine" and odd.is_dir() and not ours.exists()
    assert written_by_mlxspec(out) and (out / "config.json").exists()


def test_an_output_moved_aside_by_a_killed_force_is_put_back(tmp_path):
    moved = a_folder(tmp_path / f".out.mlxspec-tmp-old-{DEAD}", marked=True)
    with pytest.raises(OutputError, match="already exists; pass --force"):
        with atomic_dir(tmp_path / "out"):
            raise AssertionError("the previous output was not put back")
    assert not moved.exists() and (tmp_path / "out" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("lock", ["link", "text", "pipe", "folder"])
def test_the_lock_is_never_taken_on_what_is_not_mlxspecs(lock, tmp_path):
    victim, path = tmp_path / "victim.txt", tmp_path / ".out.mlxspec-lock"
    victim.write_text("root:x:0:0")
    {"link": lambda: path.symlink_to(victim), "text": lambda: path.write_text("my notes"),
     "pipe": lambda: os.mkfifo(path), "folder": path.mkdir}[lock]()
    with pytest.raises(OutputError, match="lock file"):
        with atomic_dir(tmp_path / "out"):
            raise AssertionError("the lock was taken")
    assert victim.read_text() == "root:x:0:0" and os.path.lexists(path)
    assert path.is_dir() or path.is_symlink() or lock == "pipe" or path.read_text() == "my notes"


@pytest.mark.parametrize("name, kind, message", [
    ("tokenizer.model", "pipe", "tokenizer.model: not a regular file"),
    ("model.safetensors", "pipe", "model.safetensors: cannot read (not a regular file)"),
    ("config.json", "sparse", "config.json: over 64 MiB"),
    ("tokenizer_config.json", "sparse", "tokenizer_config.json: over 64 MiB"),
])
def test_a_model_file_that_never_ends_is_one_error_line(name, kind, message, model, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    endless(copy / name, kind)
    assert message in one_error_line(["generate", "-p", "hi", "-m", str(copy), "-n", "1", "--chat"], capsys)


@pytest.mark.parametrize("command", [["bench", "--demo"], ["distill", "--demo", "-o", "{tmp}/out"]])
def test_a_prompts_file_that_never_ends_is_one_error_line(command, tmp_path, capsys):
    endless(tmp_path / "prompts", "sparse")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command] + ["--prompts", str(tmp_path / "prompts")]
    assert "over 256 MiB" in one_error_line(argv, capsys)


def test_a_pickle_that_never_ends_is_one_error_line(model, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    (copy / "model.safetensors").unlink()
    endless(copy / "pytorch_model.bin", "pipe")
    line = one_error_line(["convert", str(copy), "-o", str(tmp_path / "out")], capsys)
    assert "pytorch_model.bin: not a regular file" in line and not (tmp_path / "out").exists()


DISTILL = ["--steps", "2", "--max-new", "4", "--seq-len", "16", "--batch", "2", "--head-vocab", "64", "-q"]


@pytest.fixture(scope="module")
def distilled(model, tmp_path_factory) -> Path:
    """The work folder of a finished two-step distillation of `model` (its draft removed,
    so that `--resume` may write it again)."""
    place = tmp_path_factory.mktemp("distilled")
    (place / "prompts.jsonl").write_text("".join(f'"Prompt number {n}."\n' for n in range(10)))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXSPEC_CACHE", str(place / "cache"))
        assert run(cli.app, ["distill", "-m", str(model), "-o", str(place / "d"), "--prompts",
                             str(place / "prompts.jsonl"), *DISTILL]) == 0
    shutil.rmtree(place / "d")
    return place / "d.work"


def put(name: str, data: bytes):
    return lambda train: (train / name).write_bytes(data)


def reshaped(train: Path) -> None:
    """weights-2 with every tensor of another shape: a checkpoint of some other draft."""
    tensors = mx.load(str(train / "weights-2.safetensors"))
    mx.save_safetensors(str(train / "weights-2.safetensors"), {k: mx.zeros((3,)) for k in tensors})


@pytest.mark.parametrize("damage, message", [
    (put("state.json", b"{"), "state.json is not readable JSON"),
    (put("state.json", b'{"step": -5, "curve": []}'), "does not hold a step >= 1"),
    (put("weights-2.safetensors", b"12345678"), "weights-2.safetensors: corrupt or truncated safetensors header"),
    (lambda train: (train / "optimizer-2.safetensors").unlink(), "optimizer-2.safetensors: cannot read"),
    (reshaped, "weights-2.safetensors does not fit this draft"),
    (put("data.json", b'{"batches": 1, "head_ids": [1000000000]}'), "data.json does not hold"),
], ids=["state not json", "negative step", "truncated weights", "no optimizer", "weights of another draft",
        "head ids past the vocabulary"])
def test_a_damaged_checkpoint_is_one_error_line_on_resume(damage, message, distilled, model, tmp_path):
    work = shutil.copytree(distilled, tmp_path / "d.work")
    damage(work / "train")
    # a subprocess: head ids past the vocabulary crashed MLX (SIGSEGV), which would end pytest
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "-m", str(model), "-o", str(tmp_path / "d"),
                          "--prompts", str(distilled.parent / "prompts.jsonl"), *DISTILL, "--resume"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "MLXSPEC_CACHE": str(distilled.parent / "cache"), "HF_HUB_OFFLINE": "1"})
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "the checkpoint to resume is damaged" in lines[0], res.stderr
    assert message in lines[0] and "--force starts the distillation over" in lines[0]


def in_each_batch(pattern: str, damage):
    return lambda answers: [damage(p) for p in answers.glob(f"*/{pattern}")]


@pytest.mark.parametrize("damage", [
    in_each_batch("0*.npz", lambda p: p.write_bytes(p.read_bytes()[:20])),
    in_each_batch("0*.features.npy", lambda p: p.write_bytes(p.read_bytes()[:100])),
    in_each_batch("0*.npz", lambda p: np.savez(p, **{k: np.full_like(v, 10**9) if k == "tokens" else v
                                                   for k, v in dict(np.load(p)).items()})),
], ids=["truncated tokens", "truncated features", "tokens past the vocabulary"])
def test_a_damaged_answers_cache_is_answered_again(damage, distilled, model, tmp_path):
    cache = shutil.copytree(distilled.parent / "cache", tmp_path / "cache")
    damage(cache / "distill-answers")
    # a subprocess: tokens past the vocabulary crashed MLX (SIGSEGV), which would end pytest
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "-m", str(model), "-o", str(tmp_path / "d"),
                          "--prompts", str(distilled.parent / "prompts.jsonl"), *DISTILL], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "MLXSPEC_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0 and (tmp_path / "d" / "model.safetensors").is_file(), res.stderr
