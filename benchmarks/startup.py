"""Time from process start to the first generated token: `mlxspec generate` vs `mlx_lm generate`
on the same converted weights (the demo target, SmolLM2-135M-Instruct), as a user runs them:
a new process each time, the chat template applied, caches warm (one untimed run of each
first). The two commands alternate; medians (min-max) of --runs runs.

Two sets of weights: the demo target as converted from its Q4_1 GGUF file (mlxspec expands
it to float32 at load on MLX's CPU backend, its default there; mlx-lm runs it as stored), and
a float32 conversion of the same file (both run it as stored).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/startup.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402

from mlxspec import convert  # noqa: E402
from mlxspec.demo import demo_target, smollm2_gguf  # noqa: E402
from mlxspec.paths import cache_dir  # noqa: E402
from mlxspec.report import write_tables  # noqa: E402

PROMPT = "Why is the sky blue?"
MLX_LM_HEADER = b"=" * 10 + b"\n"  # mlx_lm generate prints this line before the generated text


def first_token_seconds(command: list[str], after: bytes = b"") -> float:
    """Seconds from starting `command` to the first byte of generated text on its stdout
    (the first byte after `after`); the process is then stopped."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = b""
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise SystemExit(f"{command[2:4]} ended without generating (exit {proc.wait()})")
            seen += chunk
            if (not after and seen) or (after in seen and seen.split(after, 1)[1]):
                return time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()


def commands(folder: Path) -> dict[str, tuple[list[str], bytes]]:
    py = sys.executable
    return {
        "mlxspec": ([py, "-m", "mlxspec", "generate", "-m", str(folder), "-p", PROMPT, "--chat", "-n", "8"], b""),
        "mlx-lm": ([py, "-m", "mlx_lm", "generate", "--model", str(folder), "--prompt", PROMPT, "--max-tokens", "8"],
                   MLX_LM_HEADER),
    }


def measure(folder: Path, runs: int) -> dict[str, list[float]]:
    """Alternating runs of both commands after one untimed run of each."""
    times: dict[str, list[float]] = {name: [] for name in commands(folder)}
    for run in range(runs + 1):
        for name, (command, after) in commands(folder).items():
            seconds = first_token_seconds(command, after)
            if run:
                times[name].append(seconds)
                print(f"  {folder.name} {name:8s} run {run}: first token after {seconds:.2f} s", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command and weights")
    args = parser.parse_args()
    fp32 = cache_dir() / "demo" / "smollm2-135m-instruct-fp32"
    if not (fp32 / "config.json").is_file():
        convert(smollm2_gguf(), fp32, dtype="float32", force=True)
    cases = {"Q4_1 as converted": demo_target(), "float32": fp32}
    results = {name: measure(folder, args.runs) for name, folder in cases.items()}
    fmt = lambda v: f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"  # noqa: E731
    table = [f"Seconds from process start to the first generated token, {args.runs} runs each, "
             f"median (min-max); prompt {PROMPT!r} with the chat template.", "",
             "| weights | mlxspec generate | mlx_lm generate | mlxspec / mlx-lm |", "|---|---|---|---|"]
    for name, times in results.items():
        ratio = statistics.median(times["mlxspec"]) / statistics.median(times["mlx-lm"])
        table.append(f"| {name} | {fmt(times['mlxspec'])} | {fmt(times['mlx-lm'])} | {ratio:.2f} |")
    path = write_tables(RESULTS, "startup", {"runs": args.runs, "prompt": PROMPT, "seconds": results}, table)
    print("\n".join(table))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
