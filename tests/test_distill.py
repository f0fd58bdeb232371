"""The demo draft's distillation script end to end on a tiny teacher: data, training
(the held-out loss goes down), evaluation, export, and resuming from a checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx

from mlxspec.load import load

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "demo_pair" / "distill.py"


def distill(teacher: Path, work: Path, out: Path, steps: int) -> subprocess.CompletedProcess:
    args = ["--teacher", str(teacher), "--workdir", str(work), "--out", str(out), "--prompts", "6",
            "--batch-prompts", "3", "--held-out-batches", "1", "--max-new", "10", "--stdlib-chunks", "12",
            "--seq-len", "64", "--layers", "1", "--head-vocab", "512", "--steps", str(steps),
            "--eval-every", "20", "--warmup", "5", "--batch", "4", "--lr", "3e-3", "--run", "tiny"]
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "MLXSPEC_CACHE": str(work / "cache")})


def test_distillation_end_to_end_and_resume(hf_full_dir, tmp_path):
    work, out = tmp_path / "work", tmp_path / "draft"
    res = distill(hf_full_dir, work, out, steps=40)
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((out / "training.json").read_text())
    assert info["final_eval"]["held_loss"] < info["initial_eval"]["held_loss"] - 0.5
    assert len(info["log"]) == 2 and info["cost"]["ratio"] > 0
    assert set(info["predicted_speedup_by_k"]) == {str(k) for k in range(1, 9)}
    draft, tok = load(out, dtype=mx.float32, dequantize=True)
    assert draft.args.head_vocab_size == 512 and draft.args.num_hidden_layers == 1
    assert draft(mx.array([[1, 5, 7]])).shape == (1, 3, 32000)
    assert tok.vocab_size == 32000
    again = distill(hf_full_dir, work, out, steps=60)  # data is reused, training resumes at step 40
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at step 40" in again.stderr
    assert len(json.loads((out / "training.json").read_text())["log"]) == 3


FEATURES_SCRIPT = SCRIPT.parent / "distill_features.py"


def test_feature_draft_training_end_to_end(hf_full_dir, tmp_path):
    """distill.py's data, then the feature draft started from its run: trains, evaluates
    through the speculative loop, exports a folder that `load_draft` reads and that decodes
    exactly (greedy speculative == greedy plain)."""
    from mlxspec import stream_generate
    from mlxspec.drafts import FeatureDraft
    from mlxspec.load import load_draft

    work, out = tmp_path / "work", tmp_path / "draft"
    assert distill(hf_full_dir, work, tmp_path / "token-draft", steps=10).returncode == 0
    args = ["--teacher", str(hf_full_dir), "--workdir", str(work), "--out", str(out), "--seq-len", "64",
            "--layers", "1", "--head-vocab", "512", "--init-from", str(work / "runs" / "tiny"), "--steps", "12",
            "--eval-every", "6", "--warmup", "2", "--batch", "4", "--lr", "3e-3", "--eval-k", "2"]
    res = subprocess.run([sys.executable, str(FEATURES_SCRIPT), *args], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MLXSPEC_CACHE": str(work / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    info = json.loads((out / "training.json").read_text())
    assert len(info["log"]) == 2 and len(info["final_eval"]["engine_acceptance_per_position"]) == 2
    assert info["cost"]["ratio"] > 0 and (work / "features.npz").is_file()
    target, tok = load(hf_full_dir, dtype=mx.float32)
    draft = load_draft(out, target, tok, dtype=mx.float32)
    assert isinstance(draft, FeatureDraft) and draft.token_ids.size == 512
    prompt = [1, 40, 50, 60, 70]
    plain = [s.token for s in stream_generate(target, None, prompt, max_tokens=12)]
    spec = [s.token for s in stream_generate(target, None, prompt, max_tokens=12, draft=draft, num_draft_tokens=3,
                                             draft_policy="fixed")]
    assert spec == plain

    # continued training from the export, on more rows of standard-library text
    options = dict(zip(args[::2], args[1::2]))
    del options["--init-from"]
    options.update({"--out": str(tmp_path / "draft2"), "--init-draft": str(out), "--extra-chunks": "4",
                    "--answers": "2", "--answer-batch": "3", "--max-new": "6",
                    "--run": "more", "--steps": "4", "--eval-every": "4"})
    more = [x for pair in options.items() for x in pair]
    res = subprocess.run([sys.executable, str(FEATURES_SCRIPT), *more], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "MLXSPEC_CACHE": str(work / "cache")})
    assert res.returncode == 0, res.stderr[-3000:]
    cont = json.loads((tmp_path / "draft2" / "training.json").read_text())
    assert cont["train_rows"] == info["train_rows"] + 4 + 2 * 3 and (work / "features-extra-4.npz").is_file()
    assert sorted(p.name for p in (work / "feature-answers").iterdir()) == ["00000.npz", "00001.npz"]
    assert abs(cont["initial_held_top1"] - info["final_eval"]["held_top1"]) < 0.05  # starts where the export ended
    assert cont["continued_from"] == info  # the earlier stage's record comes along


def test_answers_keep_the_features_of_a_full_pass(hf_full_dir):
    """The teacher's answers for feature-draft training: a left-padded batch decoded greedily
    gives each prompt's own greedy answer, and the features kept while decoding equal the
    target's pass over the finished row (the last `seq_len` positions when it is longer)."""
    sys.path.insert(0, str(SCRIPT.parent))
    from distill_features import answer_with_features

    from mlxspec import stream_generate

    target, _ = load(hf_full_dir, dtype=mx.float32)
    prompts = [[1, 40, 50], [1, 7, 8, 9, 10, 11], [1, 99]]
    rows = answer_with_features(target, prompts, True, 5, 1.0, set(), 8)
    for r, prompt in enumerate(prompts):
        answer = [s.token for s in stream_generate(target, None, prompt, max_tokens=5)]
        seq = (prompt + answer)[-8:]
        n = int(rows["valid"][r].sum())
        assert n == len(seq) and rows["tokens"][r, :n].tolist() == seq
        full = target.model(mx.array([prompt + answer]), None)[0, -n:]
        assert mx.allclose(mx.array(rows["features"][r, :n]).astype(mx.float32), full, atol=1e-2, rtol=1e-2)
