"""Serving benchmark: aggregate tokens per second and time to first token with 1, 2, 4 and 8
concurrent clients (the real `openai` client, streaming), against one server at a time:

- mlxspec serve, batching alone (the demo target, no draft);
- mlxspec serve, batching + speculation (`--demo`: the demo target and its shipped feature
  draft, draft lengths chosen per step from measured step times);
- mlxspec serve, batching + speculation with the shipped draft *model* (what mlx-lm can run);
- mlx_lm.server with the same target and that draft model (it serves a draft model one
  request at a time: `is_batchable = draft_model is None`), and without the draft (batched).

Every client sends `--requests` distinct prompts one after another, greedy, `--max-tokens`
each. All servers are started together and measured in turn (one at a time, the order
rotated between repeats), so each table cell is the median of `--repeats` runs spread over
the same stretch of time. Output: benchmarks/results/serve/report.{json,md}.

    LD_PRELOAD=... .venv/bin/python benchmarks/serve.py [--max-tokens 96] [--repeats 3] [--baseline PYTHON]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT

PROMPTS = [
    "What are the main differences between a comet and an asteroid?",
    "Give me three tips for staying focused while studying at home.",
    "Why is the sky blue? Explain it to a ten-year-old.",
    "Write a Python function that returns the n-th Fibonacci number using iteration.",
    "Write a Python function that reverses the words in a sentence.",
    "Explain what a Python list comprehension is, with an example.",
    "Describe how a bicycle gear system works.",
    "What should I pack for a weekend hiking trip?",
    "Summarise the causes of the French Revolution in a few sentences.",
    "How do vaccines train the immune system?",
    "Write a haiku about autumn leaves and explain its imagery.",
    "What is the difference between weather and climate?",
    "Give me a simple recipe for pancakes.",
    "Explain recursion to a beginner programmer.",
    "What are black holes and how do they form?",
    "List some ways to reduce household energy use.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, folder: str = "serve") -> subprocess.Popen:
    import urllib.request

    log = open(RESULTS / folder / f"server-{port}.log", "w")
    # run outside the repository: `python -m mlxspec` would import the checkout in its working folder
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=RESULTS / folder)
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited; see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{cmd} did not start")


def one_request(client, model: str, prompt: str, max_tokens: int) -> dict:
    """Stream one chat completion: time to first token, tokens, seconds."""
    start = time.perf_counter()
    first, text, usage = None, [], None
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            first = first or time.perf_counter() - start
            text.append(chunk.choices[0].delta.content)
    return {"ttft": first or time.perf_counter() - start, "tokens": usage.completion_tokens if usage else None,
            "text": "".join(text), "seconds": time.perf_counter() - start}


def load_level(port: int, model: str, clients: int, requests: int, max_tokens: int) -> dict:
    """`clients` threads, each sending `requests` prompts in turn."""
    import openai

    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=600, max_retries=0)
    one_request(client, model, "Hello!", 8)  # warm-up

    def worker(c: int) -> list[dict]:
        return [one_request(client, model, PROMPTS[(c * requests + r) % len(PROMPTS)], max_tokens)
                for r in range(requests)]

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as pool:
        results = [r for rs in pool.map(worker, range(clients)) for r in rs]
    wall = time.perf_counter() - start
    tokens = sum(r["tokens"] or 0 for r in results)
    return {"clients": clients, "requests": len(results), "tokens": tokens, "seconds": wall,
            "tokens_per_second": tokens / wall, "ttft_median": statistics.median(r["ttft"] for r in results),
            "texts": [r["text"] for r in results]}


def servers(k: int, baseline: str | None = None) -> list[tuple[str, list[str]]]:
    """Each server's name and command line. With `baseline` (the Python of another
    environment whose mlxspec is another checkout, e.g. an editable install of an earlier
    commit) the mlxspec servers run from it too, named "... (baseline)": a before/after in
    the same run."""
    py = sys.executable
    from mlxspec import demo  # the converted demo target (made on first use)

    target = str(demo.demo_target())
    draft_model = str(demo.demo_token_draft())
    ours = {
        "mlxspec batching": ["serve", "--model", target, "--name", "demo"],
        "mlxspec batching + speculation": ["serve", "--demo", "--name", "demo", "-k", str(k)],
        "mlxspec batching + draft model": ["serve", "--model", target, "--draft", draft_model, "--name", "demo",
                                           "-k", str(k)],
    }
    chosen = [(name, [py, "-m", "mlxspec", *args]) for name, args in ours.items()]
    if baseline is not None:
        chosen += [(f"{name} (baseline)", [baseline, "-m", "mlxspec", *args]) for name, args in ours.items()]
    theirs = str(ROOT / "benchmarks" / "serve_mlx_lm.py")
    return chosen + [("mlx_lm.server + draft model", [py, theirs, "--num-draft-tokens", str(k)]),
                     ("mlx_lm.server (no draft)", [py, theirs, "--no-draft"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--requests", type=int, default=1, help="prompts each client sends in turn")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every (server, clients); medians reported")
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("-k", type=int, default=2, help="most draft tokens (both servers)")
    parser.add_argument("--only", default=None, help="comma-separated server names to run")
    parser.add_argument("--baseline", default=None, help="the Python of another environment (another checkout of "
                        "mlxspec): its mlxspec servers run beside these")
    args = parser.parse_args()
    (RESULTS / "serve").mkdir(parents=True, exist_ok=True)
    levels = [int(x) for x in args.levels.split(",")]
    chosen = {n: c for n, c in servers(args.k, args.baseline) if not args.only or n in args.only.split(",")}
    procs, ports = {}, {}
    try:
        for name, cmd in chosen.items():  # all up at once (idle servers cost nothing), measured in turn
            ports[name] = free_port()
            print(f"starting {name}", flush=True)
            procs[name] = start(cmd + ["--port", str(ports[name])], ports[name])
        runs = {name: {c: [] for c in levels} for name in chosen}
        for clients in levels:
            for repeat in range(args.repeats):
                order = list(chosen)[repeat % len(chosen):] + list(chosen)[: repeat % len(chosen)]
                for name in order:
                    model = "demo" if name.startswith("mlxspec") else "default_model"
                    run = load_level(ports[name], model, clients, args.requests, args.max_tokens)
                    runs[name][clients].append(run)
                    print(f"  {name}, {clients} clients: {run['tokens_per_second']:.1f} tok/s, "
                          f"TTFT {run['ttft_median']:.2f} s", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=30)
    report = {"max_tokens": args.max_tokens, "requests_per_client": args.requests, "k": args.k,
              "repeats": args.repeats, "runs": {name: [median_run(runs[name][c]) for c in levels] for name in chosen},
              "all_runs": runs}
    write(report, levels)


def median_run(runs: list[dict]) -> dict:
    """The median throughput and time to first token of repeated runs (texts of the first)."""
    return {"clients": runs[0]["clients"], "tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
            "ttft_median": statistics.median(r["ttft_median"] for r in runs), "texts": runs[0]["texts"],
            "repeats": [round(r["tokens_per_second"], 2) for r in runs]}


def write(report: dict, levels: list[int]) -> None:
    out = RESULTS / "serve"
    (out / "report.json").write_text(json.dumps(report, indent=2))
    names = list(report["runs"])
    lines = ["| server | " + " | ".join(f"{c} clients tok/s (TTFT s)" for c in levels) + " |",
             "|---|" + "---|" * len(levels)]
    for name in names:
        cells = [f"{r['tokens_per_second']:.1f} ({r['ttft_median']:.2f})" for r in report["runs"][name]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    base = report["runs"].get("mlxspec batching")
    spec = report["runs"].get("mlxspec batching + speculation")
    if base and spec:
        ratio = [s["tokens_per_second"] / b["tokens_per_second"] for s, b in zip(spec, base)]
        lines.append("| speculation / batching alone | " + " | ".join(f"{r:.2f}x" for r in ratio) + " |")
        lines.append("| batching: aggregate / 1 client | " + " | ".join(
            f"{b['tokens_per_second'] / base[0]['tokens_per_second']:.2f}x" for b in base) + " |")
        same = [x == y for s, b in zip(spec, base) for x, y in zip(s["texts"], b["texts"])]
        lines.append(f"\ngreedy texts equal between the two mlxspec servers: {sum(same)}/{len(same)}")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
