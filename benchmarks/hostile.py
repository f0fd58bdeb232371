"""Bad input and faults, as a careless or hostile user would try them, against one build of
mlxspec's command line: does each get exactly one `error:` line, a non-zero exit, no
traceback, and is nothing lost? Run it against two builds to compare them.

    python benchmarks/hostile.py                                   # this checkout
    python benchmarks/hostile.py --mlxspec "python /tmp/run_base.py" --label base

Cases: every row of the CLI contract table (tests/test_cli_contract.py), data-safety
scenarios (an output that holds the source, --force on a folder mlxspec did not write,
two conversions racing for one folder, a full disk), a Hub id without network and a
24 MB prompt for a 512-token model (wall time recorded). Writes JSON and Markdown to
benchmarks/results/hostile/<label>.*
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402  (also puts tests/ on the path)

from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint  # noqa: E402
from test_cli_contract import CASES, broken_copies  # noqa: E402

from mlxspec.models import ModelArgs  # noqa: E402
from mlxspec.report import write_tables  # noqa: E402


TIMEOUT = 120  # seconds one invocation may take before it counts as hanging


def run(cmd: list[str], args: list[str], stdin: bytes | None = None, env: dict | None = None) -> dict:
    """One invocation: exit code, stderr lines (warnings dropped), traceback seen, seconds."""
    start = time.perf_counter()
    try:
        res = subprocess.run([*cmd, *args], input=stdin, capture_output=True, timeout=TIMEOUT,
                             env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"rc": None, "lines": [f"still running after {TIMEOUT} s (killed)"], "traceback": False,
                "seconds": TIMEOUT}
    err = res.stderr.decode(errors="replace")
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    return {"rc": res.returncode, "lines": lines, "traceback": "Traceback" in err,
            "seconds": round(time.perf_counter() - start, 2)}


def one_line(result: dict) -> bool:
    """The contract: non-zero exit, exactly one `error:` line, no traceback, not a bug report."""
    lines = result["lines"]
    return (result["rc"] not in (0, None) and not result["traceback"] and len(lines) == 1 and lines[0].startswith("error:")
            and "internal error" not in lines[0])


def places(work: Path) -> dict[str, str]:
    """A small valid model and broken copies of it (as the contract test builds them)."""
    args = ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, max_position_embeddings=512, sliding_window=16)
    model = write_random_hf_checkpoint(work / "model", args, tokenizer_file=mistral_tokenizer_file())
    return broken_copies(model, work / "bad")


def contract_rows(cmd: list[str], work: Path, where: dict[str, str]) -> list[dict]:
    rows = []
    for name, args, message, _ in CASES:
        tmp = Path(tempfile.mkdtemp(dir=work))
        model = shutil.copytree(where["model"], tmp / "model")  # a fresh copy: a build that destroys it
        argv, stdin = [a.format(tmp=tmp, **{**where, "model": model}) for a in args], None  # hurts one row
        if any(len(a) > 100_000 for a in argv):  # past the kernel's limit on one argument: send it on stdin
            stdin = next(a for a in argv if len(a) > 100_000).encode()
            argv = ["-" if len(a) > 100_000 else a for a in argv]
        result = run(cmd, argv, stdin=stdin)
        held = one_line(result) and not (tmp / "out").exists() and snapshot(model) == snapshot(Path(where["model"]))
        rows.append({"case": name, "held": held, "seconds": result["seconds"],
                     "said": (result["lines"] or [""])[0][:140] if not held else ""})
    return rows


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def safety_rows(cmd: list[str], work: Path, model: str) -> list[dict]:
    """Scenarios where data could be lost, each on fresh folders; held = refused in one
    line and everything intact."""
    rows = []
    for n, (name, target) in enumerate([("-o the folder holding the source, --force", "parent"),
                                        ("-o the source itself, --force", "source"),
                                        ("--force on a folder mlxspec did not write", "mine")]):
        parent = work / f"safety{n}" / "m"
        shutil.copytree(model, parent / "src")
        (parent / "notes.txt").write_text("not mlxspec's")
        mine = work / f"safety{n}" / "mine"
        mine.mkdir()
        (mine / "thesis.tex").write_text("years of work")
        out = {"parent": parent, "source": parent / "src", "mine": mine}[target]
        before = snapshot(work / f"safety{n}")
        result = run(cmd, ["convert", str(parent / "src"), "-o", str(out), "--force"])
        intact = snapshot(work / f"safety{n}") == before
        rows.append({"case": name, "held": one_line(result) and intact, "seconds": result["seconds"],
                     "said": "" if intact else "DATA LOST"})
    rows.append(race_row(cmd, work, model))
    return rows


def race_row(cmd: list[str], work: Path, model: str) -> dict:
    """Two conversions to one new folder: one must win, the other fail in one line."""
    out = work / "race"
    procs = [subprocess.Popen([*cmd, "convert", model, "-o", str(out), *extra], stderr=subprocess.PIPE)
             for extra in ([], ["--bits", "8"])]
    results = [(p.wait(timeout=600), p.stderr.read().decode(errors="replace")) for p in procs]
    failed = [err for rc, err in results if rc != 0]
    held = len(failed) == 1 and len(failed[0].strip().splitlines()) == 1 and "Traceback" not in failed[0]
    return {"case": "two conversions racing for one new folder", "held": held, "seconds": None,
            "said": "" if held else f"exit codes {[rc for rc, _ in results]}: both claimed success" if not failed
            else failed[0].strip()[-140:]}


def timing_rows(cmd: list[str], work: Path, model: str) -> list[dict]:
    """Failures that used to come late: a Hub id without network, a 24 MB prompt."""
    env = {"HF_HUB_CACHE": str(work / "hf-cache")}
    env_offline = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    rows = []
    for name, args, stdin in [
        ("missing org/name path, no network", ["convert", "no-such-org/no-such-model", "-o", str(work / "o1")], None),
        ("24 MB prompt, 512-token model", ["generate", "-m", model, "-p", "-", "-n", "4"], b"word " * 5_000_000),
    ]:
        result = run(cmd, args, stdin=stdin, env={**env_offline, **env})
        rows.append({"case": name, "held": one_line(result), "seconds": result["seconds"],
                     "said": (result["lines"] or [""])[-1][:140]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mlxspec", default=f"{shlex.quote(sys.executable)} -m mlxspec",
                        help="the command that runs mlxspec's CLI (default: this checkout)")
    parser.add_argument("--label", default="head", help="name of the result files")
    opts = parser.parse_args()
    cmd = shlex.split(opts.mlxspec)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        where = places(work)
        rows = (contract_rows(cmd, work, where) + safety_rows(cmd, work, where["model"])
                + timing_rows(cmd, work, where["model"]))
    held = sum(r["held"] for r in rows)
    table = ["| case | held | seconds | what it said, when it did not hold |", "|---|---|---|---|"]
    table += [f"| {r['case']} | {'yes' if r['held'] else '**no**'} | {r['seconds'] if r['seconds'] is not None else ''} "
              f"| {r['said'].replace('|', '/')} |" for r in rows]
    write_tables(RESULTS / "hostile", opts.label, {"command": opts.mlxspec, "held": held, "cases": len(rows),
                                                    "rows": rows}, [f"{held}/{len(rows)} held", "", *table])
    print(f"{opts.label}: {held}/{len(rows)} held")


if __name__ == "__main__":
    main()
