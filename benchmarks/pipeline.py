"""What a pipeline costs: the same passes (1..k+1 tokens after a 64-token context) timed
through one process and through a pipeline of ranks, medians of repeats.

    python benchmarks/pipeline.py [--model M] [--ranks 2]

The ranks are started here the way mlx.launch starts them (MLX_RANK, MLX_HOSTFILE on
loopback), not through mlx.launch: its output loop keeps a core busy, which on a 2-core
machine would be measured as pipeline overhead. Writes benchmarks/results/pipeline/
report.json and report.md: per pass the time alone, through the ranks, the overhead per hop (a pass
makes `ranks` hops: 0 -> 1 -> ... -> 0), the per-layer cost, and a projection for two Macs
on a network from those measurements (see `project`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlx.core as mx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlxspec import demo  # noqa: E402
from mlxspec.load import load_model  # noqa: E402
from mlxspec.models import Model  # noqa: E402

OUT = Path(__file__).parent / "results" / "pipeline"
SIZES = (1, 2, 3, 5, 8)  # tokens a pass: a decode step, verifications of k = 1, 2, 4, 7
# Two Macs linked by a network, one hop each way per pass (assumptions, stated in the report):
LINKS = {"10 Gb Ethernet": (1.25e9, 100e-6), "Thunderbolt 4 bridge": (2.5e9, 50e-6)}  # bytes/s, latency s


def time_passes(model: Model, repeats: int, context: int = 64) -> dict[int, float]:
    """Median seconds of a pass of each size after `context` tokens (rolled back after each)."""
    cache = model.make_cache(max_rollback=max(SIZES))
    mx.eval(model(mx.array([[(7 * i + 3) % model.args.vocab_size for i in range(context)]]), cache))
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    for r in range(repeats + 2):
        for n in SIZES:
            start = time.perf_counter()
            mx.eval(model(mx.array([[(5 * i + r) % 1000 for i in range(n)]]), cache))
            if r >= 2:  # the first rounds compile
                times[n].append(time.perf_counter() - start)
            for c in cache:
                c.rollback(n)
    return {n: statistics.median(t) for n, t in times.items()}


def alone(model_dir: Path, repeats: int) -> dict:
    model = load_model(model_dir, dtype=mx.float32, dequantize=True)
    passes = time_passes(model, repeats)
    layers = model.args.num_hidden_layers
    head = model.head(mx.zeros((1, 1, model.args.hidden_size)))
    start = time.perf_counter()
    for _ in range(20):
        mx.eval(model.head(mx.zeros((1, 1, model.args.hidden_size)) + 1))
    head_time = (time.perf_counter() - start) / 20
    del head
    return {"passes": passes, "layers": layers, "hidden_size": model.args.hidden_size,
            "per_layer_ms": {n: 1000 * (t - head_time) / layers for n, t in passes.items()}}


def pipelined(model_dir: Path, repeats: int) -> dict | None:
    from mlxspec.pipeline import close, connect, load_lead, serve_rank

    group = connect(60)
    if group.rank() > 0:
        serve_rank(model_dir, group, mx.float32, dequantize=True)
        return None
    model, _ = load_lead(model_dir, group, dtype=mx.float32, dequantize=True)
    passes = time_passes(model, repeats)
    close(model)
    return {"ranks": group.size(), "passes": passes}


def project(report: dict) -> dict[str, dict[int, float]]:
    """Seconds a pass would take on two Macs like this machine: the layers' compute (the
    one-process time: a pipeline adds no compute), plus per hop the software cost measured
    here on loopback and the link's latency and transfer time of the hidden states."""
    one, ranks = report["alone"], report["pipeline"]["ranks"]
    software = {n: hop_ms(report, n) / 1000 for n in SIZES}
    out = {}
    for link, (bandwidth, latency) in LINKS.items():
        out[link] = {n: one["passes"][n] + ranks * (software[n] + latency + 4 * n * one["hidden_size"] / bandwidth)
                     for n in SIZES}
    return out


def hop_ms(report: dict, n: int) -> float:
    """Overhead per hop of a pass of `n` tokens (pipeline - one process) / hops, in ms."""
    return 1000 * (report["pipeline"]["passes"][n] - report["alone"]["passes"][n]) / report["pipeline"]["ranks"]


def markdown(report: dict) -> str:
    projected = project(report)
    lines = ["| tokens a pass | one process ms | pipeline ms | overhead per hop ms | per layer ms | "
             + " | ".join(f"2 Macs, {link} (projected) ms" for link in LINKS) + " |",
             "|---" * (5 + len(LINKS)) + "|"]
    for n in SIZES:
        cells = [report["alone"]["passes"][n] * 1000, report["pipeline"]["passes"][n] * 1000, hop_ms(report, n),
                 report["alone"]["per_layer_ms"][n], *(projected[link][n] * 1000 for link in LINKS)]
        lines.append(f"| {n} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def start_ranks(ranks: int, args: list[str]) -> None:
    """This script with `args` on `ranks` ranks over loopback, as mlx.launch would start them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as hosts:
        json.dump([[f"127.0.0.1:{base + 1 + r}"] for r in range(ranks)], hosts)
    procs = [subprocess.Popen([sys.executable, __file__, *args],
                              env={**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": hosts.name})
             for r in range(ranks)]
    if any(p.wait() for p in procs):
        raise SystemExit("a rank failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: the demo target)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    options, _ = parser.parse_known_args()
    model_dir = options.model or demo.demo_target()
    if "MLX_RANK" in os.environ:  # one rank of the pipeline side
        side = pipelined(model_dir, options.repeats)
        if side is not None:
            (OUT / "pipeline.json").write_text(json.dumps(side))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"model": str(model_dir), "alone": alone(model_dir, options.repeats)}
    start_ranks(options.ranks, sys.argv[1:])
    report["pipeline"] = json.loads((OUT / "pipeline.json").read_text())
    (OUT / "pipeline.json").unlink()
    report = json.loads(json.dumps(report), object_hook=lambda d: {int(k) if k.isdigit() else k: v for k, v in d.items()})
    report["projection_s"] = project(report)
    (OUT / "report.json").write_text(json.dumps(report, indent=2))
    (OUT / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
