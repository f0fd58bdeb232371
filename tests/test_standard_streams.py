"""A command started with a standard descriptor closed (`<&-`, `>&-`, `2>&-`, as cron and
daemons start programs) loads and runs as with the null device there: no file it opens
takes descriptor 0, 1 or 2, and reading a prompt from a closed or unreadable standard
input is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlxspec.standard_streams import STANDARD_DESCRIPTORS


def run_closed(closed: tuple[int, ...], *args: str, stdin_file: str | None = None) -> subprocess.CompletedProcess:
    """`python -m mlxspec ARGS` with descriptors `closed` closed in the child (and standard
    input opened write-only on `stdin_file`, if given): stdout/stderr captured unless closed."""

    def close() -> None:
        for fd in closed:
            os.close(fd)
        if stdin_file is not None:  # descriptor 0, as `0>FILE` opens it
            os.set_inheritable(os.open(stdin_file, os.O_WRONLY | os.O_CREAT), True)

    return subprocess.run([sys.executable, "-m", "mlxspec", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, preexec_fn=close)


@pytest.mark.parametrize("closed", [(0,), (0, 1), (0, 2), (0, 1, 2), (1,), (2,)])
def test_generate_loads_and_runs_with_closed_standard_descriptors(closed, hf_full_dir):
    res = run_closed(closed, "generate", "-m", str(hf_full_dir), "-p", "hi", "--max-tokens", "4")
    assert res.returncode == 0, res.stderr
    if 1 not in closed:
        assert res.stdout.strip()
    if 2 not in closed:
        assert "generation: 4 tokens" in res.stderr and "error" not in res.stderr


def test_chat_with_closed_standard_input_ends_as_at_end_of_input(hf_full_dir):
    res = run_closed((0,), "chat", "-m", str(hf_full_dir), "--max-tokens", "4")
    assert res.returncode == 0 and "error" not in res.stderr, res.stderr


def test_chat_with_unreadable_standard_input_ends_with_one_line(hf_full_dir, tmp_path):
    res = run_closed((0,), "chat", "-m", str(hf_full_dir), "--max-tokens", "4", stdin_file=str(tmp_path / "w"))
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == \
        "error: cannot read standard input (Bad file descriptor)", res.stderr


def test_the_library_loads_with_standard_input_closed(hf_full_dir):
    """An app calling `mlxspec.load` from a daemon (descriptor 0 closed) loads the weights."""
    code = f"import mlxspec\nmodel, _ = mlxspec.load({str(hf_full_dir)!r})\nprint(type(model).__name__)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         preexec_fn=lambda: os.close(0))
    assert res.returncode == 0 and res.stdout.strip() == "Model", res.stderr


@pytest.mark.parametrize("stdin_file, message", [
    (None, "error: standard input is closed; give the prompt with --prompt TEXT"),
    ("write-only", "error: cannot read standard input (Bad file descriptor); give the prompt with --prompt TEXT"),
])
def test_a_prompt_from_unreadable_standard_input_is_one_line(stdin_file, message, hf_full_dir, tmp_path):
    path = None if stdin_file is None else str(tmp_path / stdin_file)
    res = run_closed((0,), "generate", "-m", str(hf_full_dir), "-p", "-", stdin_file=path)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [message], res.stderr


def test_no_file_opened_after_the_reopening_takes_a_standard_descriptor(tmp_path):
    code = ("import os\nfrom mlxspec.standard_streams import reopen_closed_descriptors\n"
            f"for fd in {STANDARD_DESCRIPTORS}:\n    os.close(fd)\n"
            "reopened = reopen_closed_descriptors()\n"
            f"fd = os.open({str(tmp_path / 'weights')!r}, os.O_RDWR | os.O_CREAT)\n"
            "null = all(os.path.samestat(os.fstat(i), os.stat(os.devnull)) for i in reopened)\n"
            f"open({str(tmp_path / 'seen')!r}, 'w').write(f'{{reopened}} {{fd}} {{null}}')\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert (tmp_path / "seen").read_text() == "[0, 1, 2] 3 True"
