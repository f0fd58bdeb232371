"""Pipeline parallel over `mx.distributed` (ring backend on loopback): two ranks give the
tokens one process gives, plain and speculative; each rank holds about half the weights;
a rank that dies, never connects or loaded another model (another shape, or other weights
of the same shape) ends the others with one line."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from conftest import make_hf_checkpoint
from full_run import full_only
from mlxspec import stream_generate
from mlxspec.load import load_model
from mlxspec.models import ModelArgs
from mlxspec.pipeline import split_layers
from synthetic import write_random_hf_checkpoint

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(HERE)}


def free_ports(n: int) -> int:
    """A first port of `n` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n < 65536 and all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def launch(*command: str, ranks: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    """`command` (arguments to python) on `ranks` ranks through mlx.launch."""
    return subprocess.run([str(BIN / "mlx.launch"), "-n", str(ranks), "--backend", "ring", "-p", str(free_ports(ranks)),
                           "--python", sys.executable, "--", *command],
                          capture_output=True, text=True, timeout=240, env=env or ENV)


def by_hand(tmp_path: Path, commands: list[list[str]]) -> list[subprocess.Popen]:
    """Each rank started as mlx.launch would, without it (as on two Macs started by hand)."""
    base = free_ports(len(commands))
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps([[f"127.0.0.1:{base + r}"] for r in range(len(commands))]))
    return [subprocess.Popen([sys.executable, *command], env={**ENV, "MLX_RANK": str(r), "MLX_HOSTFILE": str(hosts)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r, command in enumerate(commands)]


@pytest.fixture(scope="module")
def models(tmp_path_factory, hf_tokenizer_dir) -> tuple[Path, Path]:
    """A 6-layer windowed target and a draft that agrees with it part of the time (the
    target with noise on its weights), both with the Mistral tokenizer."""
    root = tmp_path_factory.mktemp("pipeline")
    target = make_hf_checkpoint(root / "target", hf_tokenizer_dir, seed=4, num_hidden_layers=6, sliding_window=12)
    draft = make_hf_checkpoint(root / "draft", hf_tokenizer_dir, seed=4, num_hidden_layers=6, sliding_window=12)
    weights = mx.load(str(draft / "model.safetensors"))
    rng = np.random.default_rng(0)
    noisy = {k: v + mx.array(0.05 * rng.standard_normal(v.shape).astype(np.float32)) * mx.abs(v).mean()
             for k, v in weights.items()}
    mx.save_safetensors(str(draft / "model.safetensors"), noisy, metadata={"format": "pt"})
    return target, draft


def generate_json(*args: str, pipeline: bool, cache: Path) -> dict:
    command = ["-m", "mlxspec", "generate", "--json", "--prompt", "The ring of ranks", "-n", "40", *args]
    env = {**ENV, "MLXSPEC_CACHE": str(cache / ("pipeline" if pipeline else "alone"))}  # calibrated apart
    if pipeline:
        done = launch(*command[:3], "--pipeline", *command[3:], env=env)
    else:
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


@pytest.mark.parametrize("draft", [full_only("none"), "model", full_only("model-adaptive"), full_only("ngram")])
def test_two_ranks_give_the_tokens_of_one_process(models, draft, tmp_path):
    target, draft_dir = models
    options = {"none": [], "model": ["--draft", str(draft_dir), "-k", "3", "--no-adaptive"],
               "model-adaptive": ["--draft", str(draft_dir)], "ngram": ["--draft", "ngram"]}[draft]
    args = ["--model", str(target), *options]
    alone, pipelined = generate_json(*args, pipeline=False, cache=tmp_path), generate_json(*args, pipeline=True, cache=tmp_path)
    assert pipelined["text"] == alone["text"]
    assert alone["generation_tokens"] == pipelined["generation_tokens"] == 40
    if draft == "model":  # drafts were rejected and accepted: every rank rolled back alike
        assert 0 < pipelined["acceptance_rate"] < 1
        assert pipelined["accepted_per_position"] == alone["accepted_per_position"]


def test_each_rank_holds_about_half_the_weights_and_peak_memory(tmp_path):
    args = ModelArgs(hidden_size=256, num_hidden_layers=8, intermediate_size=1024, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=1024, sliding_window=None)
    folder = write_random_hf_checkpoint(tmp_path / "model", args, seed=5)
    assert split_layers(args, 2) == [(0, 4), (4, 8)]
    single = load_model(folder, dtype=mx.float32)
    expected = [s.token for s in stream_generate(single, None, list(range(5, 17)), max_tokens=24)]
    whole = sum(v.nbytes for _, v in tree_flatten(single.parameters()))
    done = launch(str(HERE / "pipeline_rank.py"), str(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    reports = {r["rank"]: r for r in map(json.loads, (line for line in done.stdout.splitlines() if line.startswith("{")))}
    assert reports[0]["tokens"] == expected
    alone = subprocess.run([sys.executable, str(HERE / "pipeline_rank.py"), str(folder), "--alone"],
                           capture_output=True, text=True, env=ENV, timeout=120)
    one = json.loads(alone.stdout.splitlines()[-1])
    assert one["tokens"] == expected
    for rank in (0, 1):
        assert 0.4 < reports[rank]["weights"] / whole < 0.6, (rank, reports[rank]["weights"], whole)
        assert 0.35 < reports[rank]["peak"] / one["peak"] < 0.65, (rank, reports[rank]["peak"], one["peak"])


def test_speculative_library_run_across_ranks(models):
    target, draft = models
    single = load_model(target, dtype=mx.float32)
    expected = [s.token for s in stream_generate(single, None, list(range(5, 17)), max_tokens=30)]
    done = launch(str(HERE / "pipeline_rank.py"), str(target), "--draft", str(draft), "--tokens", "30")
    assert done.returncode == 0, done.stderr[-2000:]
    report = next(json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"rank": 0'))
    assert report["tokens"] == expected and report["accepted"] > 0


def last_error_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("victim", [1, full_only(0)])
def test_a_rank_killed_mid_run_ends_the_other_within_seconds(models, tmp_path, victim):
    target, _ = models
    command = ["-m", "mlxspec", "generate", "--pipeline", "--model", str(target), "--prompt", "Go on", "-n", "100000"]
    ranks = by_hand(tmp_path, [command, command])
    try:
        ranks[0].stdout.read(100)  # rank 0 is streaming tokens: both ranks are working
        ranks[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = ranks[1 - victim]
        _, stderr = survivor.communicate(timeout=30)
        assert time.monotonic() - killed_at < 10
    finally:
        for rank in ranks:
            rank.kill()
    assert survivor.returncode == 1
    assert len(stderr.strip().splitlines()) == 1, stderr  # MLX's per-socket lines filtered out
    assert last_error_line(stderr) == (f"error: pipeline rank {1 - victim} lost the connection to another rank: "
                                       "it exited or was killed (see its output)")


def test_a_rank_that_never_connects_and_one_with_another_model(models, tmp_path):
    target, draft = models
    command = ["-m", "mlxspec", "generate", "--pipeline", "--connect-timeout", "2", "--prompt", "x"]
    alone = by_hand(tmp_path, [command + ["--model", str(target)], ["-c", "import time; time.sleep(60)"]])
    started = time.monotonic()
    _, stderr = alone[0].communicate(timeout=30)
    alone[1].kill()
    assert time.monotonic() - started < 15 and alone[0].returncode != 0
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "error: pipeline rank 0 could not reach the other ranks within 2 s" in last_error_line(stderr)
    other = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=2,
                      vocab_size=32000, sliding_window=None)
    different = write_random_hf_checkpoint(tmp_path / "other", other, seed=1)
    mixed = by_hand(tmp_path, [command + ["--model", str(target)], command + ["--model", str(different)]])
    for rank in mixed:
        _, stderr = rank.communicate(timeout=60)
        assert rank.returncode == 2
        assert "loaded a different model" in last_error_line(stderr)


def test_a_rank_given_other_weights_of_the_same_shape_stops_every_rank_with_one_line(models, tmp_path):
    """Rank 1 is given the draft: the target's shape and configuration, its weights with a
    little noise (a fine-tune, a checkpoint of another seed): every rank refuses it."""
    target, noisy = models
    command = ["-m", "mlxspec", "generate", "--pipeline", "--connect-timeout", "30", "--prompt", "x"]
    ranks = by_hand(tmp_path, [command + ["--model", str(target)], command + ["--model", str(noisy)]])
    for rank in ranks:
        stdout, stderr = rank.communicate(timeout=90)
        assert rank.returncode == 2 and stdout == "", (rank.returncode, stderr)
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert "pipeline rank 1 loaded a different model from rank 0: the same shape, but other weights" in stderr


def test_pipeline_outside_a_launcher_is_one_line():
    done = subprocess.run([sys.executable, "-m", "mlxspec", "generate", "--pipeline", "--model", "x", "--prompt", "y"],
                          capture_output=True, text=True, env={k: v for k, v in ENV.items() if not k.startswith("MLX_")})
    assert done.returncode == 2
    assert done.stderr.startswith("error: --pipeline runs under mlx.launch") and len(done.stderr.splitlines()) == 1


def test_under_mlx_launch_a_killed_rank_stops_the_other_with_one_line(models, tmp_path):
    """mlx.launch stops the other ranks when one dies: rank 0 says why, once, no traceback."""
    target, _ = models
    launcher = subprocess.Popen([str(BIN / "mlx.launch"), "-n", "2", "--backend", "ring", "-p", str(free_ports(2)),
                                 "--python", sys.executable, "--", str(HERE / "pipeline_rank.py"), str(target),
                                 "--tokens", "450", "--pid-dir", str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"rank{r}").is_file() for r in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)  # loaded and decoding
        os.kill(int((tmp_path / "rank1").read_text()), signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=30)
    finally:
        launcher.kill()
    errors = re.findall(r"error: [^\n]*", stderr)  # mlx.launch may print its own WARN on the same line
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    assert "another rank" in errors[0]


def test_three_ranks_with_a_feature_draft_sampling_with_a_seed(models, tmp_path):
    """Three ranks, a feature draft reading the final hidden states and the outputs of a
    block on every rank (which come back to rank 0 with them), sampling at T = 1 with a seed
    and a fixed k, a prompt prefilled in several chunks: the one-process text (an adaptive k
    follows each layout's own timings, so its sampled text may differ)."""
    from test_feature_draft import feature_draft, save

    target, _ = models
    model = load_model(target, dtype=mx.float32)
    splits = split_layers(model.args, 3)
    taps = [first for first, _ in splits] + [splits[-1][1] - 1]  # the first block of each rank, and the last
    save(feature_draft(model, seed=3, feature_layers=taps), tmp_path / "feature")
    args = ["--model", str(target), "--draft", str(tmp_path / "feature"), "--temperature", "1", "--seed", "3", "-k", "3",
            "--no-adaptive",  # the same k every round: the same draws
            "--prefill-chunk", "8", "--prompt", "one two three four five six seven eight nine ten eleven twelve"]
    alone = generate_json(*args, pipeline=False, cache=tmp_path)
    command = ["-m", "mlxspec", "generate", "--pipeline", "--json", "-n", "40", *args]
    done = launch(*command, ranks=3, env={**ENV, "MLXSPEC_CACHE": str(tmp_path / "three")})
    assert done.returncode == 0 and "{" in done.stdout, done.stderr[-2000:]
    pipelined = json.loads(done.stdout[done.stdout.index("{"):])
    assert pipelined["text"] == alone["text"] and pipelined["prompt_tokens"] > 8  # two prefill chunks
    assert pipelined["draft_mode"] == alone["draft_mode"]


def test_rank_zero_frees_the_other_ranks_caches(monkeypatch):
    """A cache handle collected on rank 0 frees that cache on the other ranks with the next
    command (never in the middle of one)."""
    import gc

    from mlxspec.pipeline import link

    sent: list[list[int]] = []
    monkeypatch.setattr(link.mx.distributed, "send", lambda x, dst, group=None: sent.append(x.tolist()) or x)
    channel = link.Link(group=None)
    cache = link.RemoteCache(channel, 4)
    first = cache.id
    del cache
    gc.collect()
    channel.send_header(link.ROLLBACK, 99, 1)
    assert [link.FREE, first, 0, 0, 0, 0] in sent and sent[-1][:2] == [link.ROLLBACK, 99]
