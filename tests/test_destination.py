"""Nothing is lost when writing an output (`convert.atomic`): `--force` replaces only what
mlxspec wrote, never a source or a folder holding one; two writers to one new folder give
one winner and one clear error; a failing disk leaves nothing behind and says where."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mlxspec
from mlxspec.convert.atomic import atomic_dir, written_by_mlxspec
from mlxspec.errors import OutputError


def run_cli(*args: str, limit_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # a full disk, as the writer sees it: writes past the limit fail (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=limit if limit_file_bytes else None)


def one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def source_in_folder(hf_full_dir, tmp_path) -> tuple[Path, Path]:
    """/m/src (a checkpoint) beside /m/notes.txt: what a careless -o could destroy."""
    parent = tmp_path / "m"
    shutil.copytree(hf_full_dir, parent / "src")
    (parent / "notes.txt").write_text("not mlxspec's")
    return parent, parent / "src"


@pytest.mark.parametrize("where", ["parent", "source", "grandparent"])
def test_a_destination_that_is_or_holds_the_source_is_refused(where, source_in_folder):
    parent, src = source_in_folder
    out = {"parent": parent, "source": src, "grandparent": parent.parent}[where]
    before = snapshot(parent)
    for force in (False, True):
        with pytest.raises(OutputError, match="is the source|contains the source"):
            mlxspec.convert(src, out, force=force)
    assert snapshot(parent) == before
    line = one_error_line(run_cli("convert", str(src), "-o", str(out), "--force"))
    assert "source" in line and snapshot(parent) == before


def test_force_replaces_only_what_mlxspec_wrote(hf_full_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="was not written by mlxspec"):
        mlxspec.convert(hf_full_dir, mine, force=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    line = one_error_line(run_cli("convert", str(hf_full_dir), "-o", str(mine), "--force"))
    assert "was not written by mlxspec" in line and (mine / "thesis.tex").is_file()
    out = mlxspec.convert(hf_full_dir, tmp_path / "out")
    assert written_by_mlxspec(out) and json.loads((out / ".mlxspec").read_text())["kind"] == "model"
    (out / "extra.txt").write_text("mine now")  # still mlxspec's folder: --force may replace it
    mlxspec.convert(hf_full_dir, out, bits=8, force=True)
    assert not (out / "extra.txt").exists() and written_by_mlxspec(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    mlxspec.convert(hf_full_dir, empty)  # an empty folder holds nothing to lose
    assert written_by_mlxspec(empty)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        mlxspec.convert(hf_full_dir, tmp_path / "file", force=True)


@pytest.mark.parametrize("kind", ["model", "pair", "report", "draft"])
@pytest.mark.parametrize("names", [("config.json", "model.safetensors"), ("pair.json",), ("report.json",),
                                   ("training.json", "config.json"), ("run.json",), (".mlxspec-tmp-1",)])
def test_force_never_takes_file_names_for_the_marker(kind, names, tmp_path):
    """Only the `.mlxspec` marker makes a folder mlxspec's: files named as its outputs are a user's."""
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in names:
        (mine / name).write_text("{}")
    with pytest.raises(OutputError, match="was not written by mlxspec"):
        with atomic_dir(mine, force=True, kind=kind):
            pass
    assert snapshot(mine) == {name: b"{}" for name in names}


def test_a_destination_appearing_meanwhile_is_never_replaced(hf_full_dir, tmp_path):
    out = tmp_path / "out"

    def someone_else_writes(done, total, name):
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("finished output")

    with pytest.raises(OutputError, match="appeared while this output was written"):
        mlxspec.convert(hf_full_dir, out, progress=someone_else_writes)
    assert snapshot(out) == {"theirs.txt": b"finished output"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_second_writer_fails_at_once_while_the_first_holds_the_lock(hf_full_dir, tmp_path):
    out, seen = tmp_path / "out", []

    def second_writer(done, total, name):
        if not seen:
            with pytest.raises(OutputError, match="being written by another mlxspec process") as exc:
                mlxspec.convert(hf_full_dir, out, bits=8)
            seen.append(str(exc.value))

    mlxspec.convert(hf_full_dir, out, progress=second_writer)
    assert seen and "quantization" not in json.loads((out / "config.json").read_text())


def test_two_concurrent_conversions_one_wins_the_other_says_why(hf_full_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlxspec", "convert", str(hf_full_dir), "-o", str(out)]
    procs = [subprocess.Popen([*cmd, *extra], stderr=subprocess.PIPE, text=True) for extra in ([], ["--bits", "8"])]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(rc == 0 for rc, _ in results) == [False, True], results
    loser = next(err for rc, err in results if rc != 0)
    assert len(loser.strip().splitlines()) == 1 and "Traceback" not in loser
    assert "being written by another mlxspec process" in loser or "already exists" in loser
    winner_bits = 8 if results[1][0] == 0 else None
    assert json.loads((out / "config.json").read_text()).get("quantization", {}).get("bits") == winner_bits
    model, _ = mlxspec.load(out)  # the winner's output is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_full_disk_leaves_nothing_and_says_where(hf_full_dir, tmp_path):
    out = tmp_path / "out"
    line = one_error_line(run_cli("convert", str(hf_full_dir), "-o", str(out), limit_file_bytes=200_000))
    assert "File too large" in line and str(out) in line
    assert list(tmp_path.iterdir()) == []
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    line = one_error_line(run_cli("convert", str(hf_full_dir), "-o", str(blocked / "out")))
    assert line == f"error: cannot write {blocked / 'out'}: {blocked} is a file, not a folder"
    with pytest.raises(OutputError, match="is a file, not a folder"):
        with atomic_dir(blocked / "report"):
            pass


def test_force_never_crosses_kinds_and_bench_never_writes_over_what_it_reads(hf_full_dir, tmp_path, monkeypatch):
    model = mlxspec.convert(hf_full_dir, tmp_path / "model")
    with pytest.raises(OutputError, match="holds an mlxspec model, not a report"):
        with atomic_dir(model, force=True, kind="report"):
            pass
    assert written_by_mlxspec(model) and (model / "config.json").is_file()
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path / "cache"))
    from mlxspec.demo import demo_target_folder

    demo = demo_target_folder()
    shutil.copytree(model, demo)
    shutil.copy(model / ".mlxspec", tmp_path / "marker")
    (demo / ".mlxspec").write_text(json.dumps({"written_by": "mlxspec", "kind": "report"}))  # even so
    line = one_error_line(run_cli("bench", "--demo", "-o", str(demo), "--force"))
    assert "is the source" in line and (demo / "config.json").is_file()


@pytest.mark.parametrize("out, message", [
    ("/", "/ contains the source"), ("/proc/mlxspec-out", "cannot write /proc/mlxspec-out: /proc:"),
    ("x" * 300, "File name too long"), ("", "the out path is empty"),
])
def test_odd_destinations_are_one_line(out, message, hf_full_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(mlxspec.MlxspecError, match=message):
        mlxspec.convert(hf_full_dir, out)
    assert list(tmp_path.iterdir()) == []
