"""The work folder `OUT.work` (`distill.work`): mlxspec resumes, starts over or deletes only
a folder carrying its marker, whatever files another holds (a `run.json` of the user's
survives `--force` untouched); a failed run leaves it only when `--resume` can continue
from it (a checkpoint), so a run failing earlier leaves nothing behind."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlxspec.convert.atomic import mark, written_kind
from mlxspec.distill import distill
from mlxspec.errors import OutputError

SMALL = dict(max_new=8, seq_len=16, head_vocab=64, batch=4, answer_batch=4, eval_k=2, eval_prompts=1, steps=4)
RUN_JSON = json.dumps({"options": {}, "runs": []})


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path_factory.getbasetemp() / "work-cache"))


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text('"Tell me about the sea."\n"Explain gravity."\n"Name three colours."\n')
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fail_at(stage: str, step: int, error: type[BaseException]):
    def progress(at: str, done: int, total: int) -> None:
        if at == stage and done == step:
            raise error("stopped here")

    return progress


@pytest.mark.parametrize("files", [
    {"run.json": RUN_JSON, "thesis.tex": "years of work"},
    {"run.json": RUN_JSON, "train/state.json": '{"step": 50}', "train/weights-50.safetensors": "mine"},
    {"notes.txt": "mine"},
    {".mlxspec": json.dumps({"written_by": "someone else", "kind": "distill-work"}), "run.json": RUN_JSON},
    {".mlxspec": json.dumps({"written_by": "mlxspec", "kind": "model"}), "config.json": "{}"},
    {".mlxspec/run.json": RUN_JSON},
])
def test_a_work_folder_without_the_marker_survives_every_flag(files, hf_full_dir, prompts, tmp_path):
    work = tmp_path / "draft.work"
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    before = snapshot(work)
    for flags in ({}, {"force": True}, {"resume": True}, {"resume": True, "force": True}):
        with pytest.raises(OutputError, match="no .mlxspec marker of mlxspec distill|not a distillation's work"):
            distill(hf_full_dir, tmp_path / "draft", prompts=prompts, **flags, **SMALL)
        assert snapshot(work) == before and not (tmp_path / "draft").exists()


def test_force_on_the_command_line_leaves_a_users_run_json_folder_untouched(hf_full_dir, prompts, tmp_path):
    work = tmp_path / "draft.work"
    work.mkdir()
    (work / "run.json").write_text(RUN_JSON)
    (work / "results.csv").write_text("a,b\n1,2\n")
    res = subprocess.run([sys.executable, "-m", "mlxspec", "distill", "--target", str(hf_full_dir), "--prompts",
                          str(prompts), "-o", str(tmp_path / "draft"), "--force", "--steps", "2"],
                         capture_output=True, text=True, timeout=120)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "remove it yourself" in lines[0], res.stderr
    assert snapshot(work) == {"run.json": RUN_JSON.encode(), "results.csv": b"a,b\n1,2\n"}


@pytest.mark.parametrize("stage, step, error", [
    ("answering the prompts", 1, KeyboardInterrupt),
    ("training the draft", 2, RuntimeError),
    ("training the draft", 2, MemoryError),
])
def test_a_run_failing_before_a_checkpoint_leaves_nothing(stage, step, error, hf_full_dir, prompts, tmp_path):
    with pytest.raises(error):
        distill(hf_full_dir, tmp_path / "draft", prompts=prompts, progress=fail_at(stage, step, error), **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def test_a_run_failing_after_a_checkpoint_keeps_it_and_resumes(hf_full_dir, prompts, tmp_path, monkeypatch):
    run = importlib.import_module("mlxspec.distill.run")

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    with monkeypatch.context() as patch:
        patch.setattr(run, "acceptance", broken)
        with pytest.raises(RuntimeError):
            distill(hf_full_dir, tmp_path / "draft", prompts=prompts, **SMALL)
    work = tmp_path / "draft.work"
    assert written_kind(work) == "distill-work" and (work / "train" / "state.json").is_file()
    with pytest.raises(OutputError, match="--resume continues it, --force starts over"):
        distill(hf_full_dir, tmp_path / "draft", prompts=prompts, **SMALL)
    out = distill(hf_full_dir, tmp_path / "draft", prompts=prompts, resume=True, **SMALL)
    assert len(json.loads((out / "training.json").read_text())["runs"]) == 2


def test_force_starts_over_only_a_marked_work_folder_and_a_failure_then_leaves_nothing(hf_full_dir, prompts,
                                                                                         tmp_path):
    work = tmp_path / "draft.work"
    work.mkdir()
    mark(work, "distill-work")
    (work / "run.json").write_text(RUN_JSON)
    (work / "train").mkdir()
    (work / "train" / "state.json").write_text('{"step": 3}')
    with pytest.raises(KeyboardInterrupt):
        distill(hf_full_dir, tmp_path / "draft", prompts=prompts, force=True,
                progress=fail_at("answering the prompts", 1, KeyboardInterrupt), **SMALL)
    assert not work.exists()


def test_an_empty_work_folder_is_used_and_a_source_inside_one_is_refused(hf_full_dir, prompts, tmp_path):
    (tmp_path / "draft.work").mkdir()
    out = distill(hf_full_dir, tmp_path / "draft", prompts=prompts, **SMALL)
    assert written_kind(out) == "draft" and written_kind(tmp_path / "draft.work") == "distill-work"
    inside = tmp_path / "draft.work" / "prompts.jsonl"
    inside.write_text(prompts.read_text())
    with pytest.raises(OutputError, match="contains the source"):
        distill(hf_full_dir, tmp_path / "draft", prompts=inside, force=True, **SMALL)
    assert inside.read_text() == prompts.read_text()
