"""`mlxspec distill` on a tiny target: the loss goes down, the draft loads and greedy
speculative == plain, a killed run resumes to the same weights, the time budget holds, and
bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

import mlxspec
from mlxspec.convert.atomic import mark
from mlxspec.distill import distill

PROMPTS = ["Tell me about the sea.", {"prompt": "Write a haiku about rain."}, "Explain gravity.",
           {"messages": [{"role": "user", "content": "What is two plus two?"}]}, "Name three colours.",
           "Why do cats purr?", "Describe a forest.", "How do planes fly?", "What is a prime number?"]
SMALL = dict(max_new=12, seq_len=32, head_vocab=256, batch=4, answer_batch=4, eval_k=3, eval_prompts=2, lr=3e-3)


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Answers (and calibrations) kept in a cache of these tests, not the user's."""
    monkeypatch.setenv("MLXSPEC_CACHE", str(tmp_path_factory.getbasetemp() / "distill-cache"))


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(p) for p in PROMPTS) + "\n")
    return path


def weights(folder: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in mx.load(str(folder / "model.safetensors")).items()}


@pytest.mark.parametrize("kind", ["feature", "model"])
def test_loss_goes_down_and_the_draft_speculates_exactly(kind, hf_full_dir, prompts_file, tmp_path):
    # the feature draft: fused features of the first block and the final one, with training-time test
    extra = dict(unroll=2, feature_layers=[0]) if kind == "feature" else {}
    out = distill(hf_full_dir, tmp_path / "draft", kind=kind, prompts=prompts_file, steps=40, **extra, **SMALL,
                  command="mlxspec distill ...")
    info = json.loads((out / "training.json").read_text())
    assert info["command"] == "mlxspec distill ..."
    assert info["options"]["feature_layers"] == extra.get("feature_layers")
    assert info["curve"][-1][1] < info["curve"][0][1] - 0.05 and info["stopped_by"] == "steps"
    if kind == "feature":  # starts token-only (fc = [I, 0]): reading features must help it
        assert info["evaluation"]["held_top1"] > info["evaluation"]["held_top1_before"]
    assert len(info["evaluation"]["acceptance_T0"]) == len(info["evaluation"]["acceptance_T1"]) == 3
    target, tokenizer = mlxspec.load(hf_full_dir, dtype=mx.float32)
    draft = mlxspec.load_draft(out, target, tokenizer, dtype=mx.float32)
    assert type(draft).__name__ == {"feature": "FeatureDraft", "model": "Model"}[kind]
    plain = [s.token for s in mlxspec.Session(target, tokenizer).stream("Tell me a story.", max_tokens=30)]
    session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=3, draft_policy="fixed")
    steps = list(session.stream("Tell me a story.", max_tokens=30))
    assert [s.token for s in steps] == plain and steps[-1].stats.drafted > 0


def test_a_killed_run_resumes_to_the_same_weights(hf_full_dir, prompts_file, tmp_path):
    whole = distill(hf_full_dir, tmp_path / "whole", prompts=prompts_file, steps=24, checkpoint_every=5, **SMALL)

    def kill_at_13(stage: str, done: int, total: int) -> None:
        if stage == "training the draft" and done == 13:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(hf_full_dir, tmp_path / "killed", prompts=prompts_file, steps=24, checkpoint_every=5,
                progress=kill_at_13, **SMALL)
    assert not (tmp_path / "killed").exists()
    assert json.loads((tmp_path / "killed.work" / "train" / "state.json").read_text())["step"] == 10
    resumed = distill(hf_full_dir, tmp_path / "killed", prompts=prompts_file, steps=24, checkpoint_every=5,
                      resume=True, **SMALL)
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    info, whole_info = (json.loads((f / "training.json").read_text()) for f in (resumed, whole))
    assert len(info["runs"]) == 2
    assert [s for s, _ in info["held_top1_curve"]] == [5, 10, 15, 20] and info["held_top1_curve"] == whole_info["held_top1_curve"]


class TickingClock:
    """A `time` for distill's modules whose `monotonic()` advances a fifth of a second per
    reading: the budget is then counted in readings, the same on any machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 0.2
        return self.now


def test_the_time_budget_is_respected(hf_full_dir, prompts_file, tmp_path, monkeypatch):
    from mlxspec.distill import answers, evaluate, run, train

    clock = TickingClock()
    for module in (answers, evaluate, run, train):
        monkeypatch.setattr(module, "time", clock)
    out = distill(hf_full_dir, tmp_path / "draft", prompts=prompts_file, steps=10**6, minutes=0.1, **SMALL)
    info = json.loads((out / "training.json").read_text())
    assert info["stopped_by"] == "time budget" and info["curve"][-1][0] < 10**6
    assert clock.now <= 0.1 * 60 + 1 and info["seconds"] <= 0.1 * 60  # every stage stopped at its share of the budget


def test_the_command_line_is_recorded(monkeypatch):
    from mlxspec import cli_distill

    monkeypatch.setattr(sys, "argv", ["/venv/bin/mlxspec", "distill", "--demo", "-o", "my draft"])
    assert cli_distill._command_line() == "mlxspec distill --demo -o 'my draft'"
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])  # not run as `mlxspec distill`: nothing recorded
    assert cli_distill._command_line() is None


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlxspec", "distill", *args], capture_output=True, text=True,
                          timeout=300)


def test_bad_input_is_one_line(hf_full_dir, prompts_file, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    (tmp_path / "bad.jsonl").write_text('"fine"\n{"prompt": 3}\n')
    (tmp_path / "broken.jsonl").write_text('"fine"\n{"prompt": \n')
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("keep me")
    base = ["--target", str(hf_full_dir), "--steps", "5", "--max-new", "8", "--seq-len", "16", "--head-vocab", "64"]
    cases = [(["--prompts", str(tmp_path / "empty.jsonl"), "-o", str(tmp_path / "a")], "holds no prompts"),
             (["--prompts", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "a")], "bad.jsonl line 2"),
             (["--prompts", str(tmp_path / "broken.jsonl"), "-o", str(tmp_path / "a")], "line 2: not valid JSON"),
             (["--prompts", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "a")], "cannot read the prompts"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "taken")], "already exists"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--kind", "medusa"], "--kind must be one of"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--minutes", "-1"], "--minutes must be"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--feature-layers", "1,0"], "ascending block"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--feature-layers", "0,9"], "has 2 blocks"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--feature-layers", "x"], "feature layers"),
             (["--prompts", str(prompts_file), "-o", str(tmp_path / "a"), "--kind", "model", "--feature-layers", "0"],
              "for feature drafts")]
    for args, needle in cases:
        res = cli(*base, *args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, res.stderr)
    for args in (["--target", str(tmp_path / "nowhere")], [], ["--target", str(hf_full_dir), "--demo"]):
        res = cli(*args, "-o", str(tmp_path / "a"))
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, (args, res.stderr)
    assert (tmp_path / "taken" / "mine.txt").read_text() == "keep me" and not (tmp_path / "a").exists()
    (tmp_path / "a.work").mkdir()
    mark(tmp_path / "a.work", "distill-work")  # a started distillation (see test_distill_work.py for the others)
    (tmp_path / "a.work" / "run.json").write_text(json.dumps({"options": {}, "runs": []}))
    res = cli(*base, "--prompts", str(prompts_file), "-o", str(tmp_path / "a"))
    assert res.returncode != 0 and "--resume continues it, --force starts over" in res.stderr, res.stderr


def test_answers_of_a_windowed_target_are_its_own_features():
    """Left-padded, batched answering with a sliding window gives each row the features of
    a plain pass over its own tokens (the band of the window in the mask)."""
    from mlxspec.distill.answers import answer_batch
    from mlxspec.models import Model, ModelArgs

    mx.random.seed(0)
    model = Model(ModelArgs(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=100, sliding_window=5))
    prompts = [[3, 4, 5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
    rows = answer_batch(model, prompts, True, 8, set(), 64, taps=(0,))  # with the first block's outputs
    assert rows["features"].shape[-1] == 2 * 64
    for r in range(2):
        n = int(rows["valid"][r].sum())
        plain = model.model(mx.array(rows["tokens"][r:r + 1, :n]), None, (0,))  # the tap kept normalised
        plain = np.array(mx.concatenate([plain[..., :64], mx.fast.rms_norm(plain[..., 64:], None, 1e-5)], axis=-1))[0]
        assert np.abs(rows["features"][r, :n].astype(np.float32) - plain).max() < 2e-2  # stored as float16


def test_a_quantized_target_is_kept_quantized(hf_full_dir, prompts_file, tmp_path):
    """--keep-quantized: the 4-bit target answers and scores as stored (only what the draft
    copies is expanded); both kinds of draft train, load and speculate exactly with it."""
    quantized = mlxspec.convert(hf_full_dir, tmp_path / "q4", bits=4, group_size=32)
    target, tokenizer = mlxspec.load(quantized)
    assert type(target.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"
    plain = [s.token for s in mlxspec.Session(target, tokenizer).stream("Tell me a story.", max_tokens=20)]
    for kind in ("feature", "model"):
        layers = [0] if kind == "feature" else "auto"  # the feature draft reads a block of the quantized target
        out = distill(quantized, tmp_path / kind, kind=kind, prompts=prompts_file, steps=20, dequantize=False,
                      feature_layers=layers, **SMALL)
        info = json.loads((out / "training.json").read_text())
        assert info["curve"][-1][1] < info["curve"][0][1]
        draft = mlxspec.load_draft(out, target, tokenizer)
        session = mlxspec.Session(target, tokenizer, draft, num_draft_tokens=3, draft_policy="fixed")
        assert [s.token for s in session.stream("Tell me a story.", max_tokens=20)] == plain


def test_the_builtin_prompts_leave_out_the_bench_prompts():
    """A draft distilled on the built-in set is measured by `bench` on prompts it never saw."""
    from mlxspec.distill.prompt_set import builtin_prompts
    from mlxspec.prompts import BUILTIN_PROMPTS

    train = builtin_prompts(0)
    assert len(train) == len(set(train)) > 3000
    assert not {p for kind in BUILTIN_PROMPTS.values() for p in kind} & set(train)
