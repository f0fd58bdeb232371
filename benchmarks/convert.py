"""Converting a 7B-shaped checkpoint to 4-bit: mlxspec vs mlx-lm, wall time and peak RSS.

Writes a checkpoint with Mistral-7B-v0.1's dimensions (random fp16 weights, two shards
with an index like the Hub's, ~14.5 GB, never all in memory), then converts it with
`mlxspec convert` and `mlx_lm convert` in child processes, measuring each child's wall
time and peak resident memory (wait4's ru_maxrss). Needs ~25 GB of free disk.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python benchmarks/convert.py --workdir /tmp/bench7b
"""

from __future__ import annotations

import argparse
import os
import statistics
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402
from synthetic import mistral_tokenizer_file, write_random_hf_checkpoint  # noqa: E402

from mlxspec.convert.safetensors_io import SafetensorsReader  # noqa: E402
from mlxspec.models import ModelArgs  # noqa: E402
from mlxspec.report import write_tables  # noqa: E402

MISTRAL_7B = ModelArgs(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000, sliding_window=4096, rope_theta=10000.0,
                       max_position_embeddings=32768)


def run_child(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in GB) of one child process; raises if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"{cmd[2:4]} failed:\n{stderr[-2000:]}")
    return wall, usage.ru_maxrss * 1024 / 1e9


def same_tensor(a: Path, b: Path, name: str) -> bool:
    def find(folder: Path):
        for f in folder.glob("*.safetensors"):
            reader = SafetensorsReader(f)
            if name in reader.header:
                return np.array(reader.read(name))
        raise KeyError(name)

    return np.array_equal(find(a), find(b))


def source_checkpoint(workdir: Path) -> Path:
    """The 7B-shaped fp16 input, written once (never all in memory)."""
    src = workdir / "mistral-7b-shaped"
    if not (src / "config.json").exists():
        print("writing the 7B-shaped fp16 checkpoint ...", flush=True)
        t = time.perf_counter()
        write_random_hf_checkpoint(src, MISTRAL_7B, seed=0, dtype="float16", tokenizer_file=mistral_tokenizer_file(),
                                   shard_bytes=10 * 1000**3)
        print(f"  written in {time.perf_counter() - t:.0f} s", flush=True)
    return src


def convert_runs(src: Path, workdir: Path, runs: int) -> tuple[dict, dict[str, Path]]:
    """Both converters in turn, `runs` times each, the input read into the page cache first."""
    py = sys.executable
    tools = {
        "mlxspec": lambda out: [py, "-m", "mlxspec", "convert", str(src), "-o", str(out), "--bits", "4",
                                "--group-size", "64", "--quiet"],
        "mlx-lm": lambda out: [py, "-m", "mlx_lm", "convert", "--hf-path", str(src), "--mlx-path", str(out),
                               "-q", "--q-bits", "4", "--q-group-size", "64"],
    }
    results: dict[str, dict[str, list[float]]] = {t: {"wall_s": [], "peak_rss_gb": []} for t in tools}
    outs = {t: workdir / f"out-{t}" for t in tools}
    for run in range(runs):
        for tool, cmd in tools.items():
            shutil.rmtree(outs[tool], ignore_errors=True)
            subprocess.run(["cat", *map(str, src.glob("*.safetensors"))], stdout=subprocess.DEVNULL, check=True)
            wall, rss = run_child(cmd(outs[tool]))
            results[tool]["wall_s"].append(wall)
            results[tool]["peak_rss_gb"].append(rss)
            print(f"  run {run + 1} {tool:8s} {wall:7.1f} s  peak RSS {rss:6.2f} GB", flush=True)
    return {t: {k: statistics.median(v) for k, v in r.items()} | {"runs": r} for t, r in results.items()}, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="folder for the ~14.5 GB input and both outputs")
    parser.add_argument("--runs", type=int, default=1, help="conversions per tool (alternating; median reported)")
    parser.add_argument("--keep", action="store_true", help="keep the input checkpoint for later runs")
    args = parser.parse_args()
    src = source_checkpoint(args.workdir)
    size = sum(f.stat().st_size for f in src.glob("*.safetensors"))
    summary, outs = convert_runs(src, args.workdir, args.runs)
    identical = all(same_tensor(outs["mlxspec"], outs["mlx-lm"], n) for n in (
        "model.layers.0.self_attn.q_proj.weight", "model.layers.31.mlp.down_proj.scales", "lm_head.biases"))
    a, b = summary["mlxspec"], summary["mlx-lm"]
    table = [
        f"Mistral-7B-v0.1-shaped checkpoint, fp16, {size / 1e9:.1f} GB in 2 shards -> 4-bit, group 64.",
        "",
        "| tool | wall time (s) | peak RSS (GB) |",
        "|---|---|---|",
        f"| mlxspec convert | {a['wall_s']:.1f} | {a['peak_rss_gb']:.2f} |",
        f"| mlx_lm convert | {b['wall_s']:.1f} | {b['peak_rss_gb']:.2f} |",
        f"| ratio mlxspec / mlx-lm | {a['wall_s'] / b['wall_s']:.3f} | {a['peak_rss_gb'] / b['peak_rss_gb']:.3f} |",
        "",
        f"Quantized tensors byte-identical between the two outputs (3 sampled): {identical}.",
    ]
    path = write_tables(RESULTS, "convert", {"input_bytes": size, "results": summary, "identical_sample": identical},
                        table)
    print("\n".join(table))
    print(f"\nwritten: {path}")
    for out in outs.values():
        shutil.rmtree(out, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
