"""Drafts with a subset head, and `mlxspec bench`: exactness with zero-mass tokens, the
mlx-lm adapter, the report's schema, and bad input as one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

import mlxspec
from mlxspec import stream_generate
from mlxspec.baseline import mlx_lm_models
from mlxspec.bench import parse_ks, parse_temperatures
from mlxspec.report import PLOT_FILES, SCHEMA_VERSION
from mlxspec.models.config import ModelArgs
from mlxspec.errors import InputError
from mlxspec.models import Model
from mlxspec.engine.options import GenerationOptions
from mlxspec.engine.sampling import SamplingParams, process_logits
from mlxspec.engine.verify import verify

from conftest import make_hf_checkpoint
from test_cli import run
from test_speculative import chi2_critical, chi2_stat, first_token_counts

ROW_KEYS = {"engine", "k", "temperature", "tokens_per_s", "speedup", "ttft_s", "peak_memory_gb"}
ARGS = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=96, model_type="llama")


def subset_draft(target: Model, n: int, seed: int) -> Model:
    """The target's first block under a head over `n` of its tokens (ids spread out)."""
    args = ModelArgs(**{**ARGS, "num_hidden_layers": 1, "head_vocab_size": n})
    draft = Model(args)
    ids = mx.array(np.sort(np.random.default_rng(seed).choice(args.vocab_size, n, replace=False)).astype(np.int32))
    params = {k: v for k, v in tree_flatten(target.parameters())
              if k.startswith(("model.embed_tokens", "model.norm", "model.layers.0."))}
    params["lm_head.out_proj.weight"] = target.lm_head.weight[ids]
    params["lm_head.token_ids"] = ids
    draft.load_weights(list(params.items()))
    mx.eval(draft.parameters())
    return draft


@pytest.fixture(scope="module")
def pair():
    mx.random.seed(3)
    target = Model(ModelArgs(**ARGS))
    target.update({"lm_head": {"weight": target.lm_head.weight * 5}})
    mx.eval(target.parameters())
    return target, subset_draft(target, 40, 0)


def test_subset_head_scores_only_its_tokens(pair):
    _, draft = pair
    tokens = mx.array([[1, 5, 9, 2]])
    full = draft(tokens)
    ids = np.array(draft.lm_head.token_ids)
    assert np.isinf(np.array(full)).sum(-1).tolist() == [[96 - 40] * 4]
    sub = draft.lm_head.subset_logits(draft.model(tokens, None))
    assert mx.allclose(full[..., mx.array(ids)], sub).item()


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_speculation_with_a_subset_draft_is_exact(pair, k):
    target, draft = pair
    prompt = list(range(4, 14))
    plain = [s.token for s in stream_generate(target, None, prompt, max_tokens=40)]
    spec = list(stream_generate(target, None, prompt, max_tokens=40, draft=draft, num_draft_tokens=k, draft_policy="fixed"))
    assert [s.token for s in spec] == plain
    outside = set(range(96)) - set(np.array(draft.lm_head.token_ids).tolist())
    assert any(t in outside for t in plain)  # the target produced tokens the draft cannot propose
    assert spec[-1].stats.accepted > 0


def test_verify_with_zero_mass_draft_tokens_keeps_the_target_distribution():
    """A subset draft puts probability 0 on some tokens; they must still come out at p's rate."""
    rng = np.random.default_rng(0)
    V, k = 10, 2
    params = SamplingParams(1.0)
    p_lp = process_logits(mx.array(rng.normal(size=(k + 1, V)).astype(np.float32) * 1.5), params)
    q = rng.normal(size=(k, V)).astype(np.float32) * 1.5
    q[:, [0, 3, 7]] = -np.inf
    q_lp = process_logits(mx.array(q), params)
    counts = first_token_counts(verify, p_lp, q_lp, 40000, seed=4)
    stat, df = chi2_stat(counts, np.exp(np.array(p_lp[0])))
    assert stat < chi2_critical(df), (stat, df)
    assert counts[[0, 3, 7]].sum() > 1000


def test_mlx_lm_adapter_runs_the_same_weights(pair):
    target, draft = pair
    theirs_t, theirs_d = mlx_lm_models(target, draft)
    tokens = mx.array([[3, 8, 1, 40, 7]])
    assert mx.allclose(theirs_t(tokens), target(tokens), atol=1e-5).item()
    a, b = theirs_d(tokens), draft(tokens)
    finite = mx.isfinite(b)
    assert mx.array_equal(mx.isfinite(a), finite).item()
    assert mx.allclose(mx.where(finite, a, 0), mx.where(finite, b, 0), atol=1e-5).item()


def test_parse_ks():
    assert parse_ks("1..4,6,8") == [1, 2, 3, 4, 6, 8]
    assert parse_ks(" 2 , 2..3 ") == [2, 3]
    for bad, message in [("0", "every k must be in 1..64"), ("a", "cannot read 'a'"), ("", "cannot read ''"),
                         ("1..", "cannot read '1..'"), ("..4", "cannot read '..4'"), ("1,,2", "cannot read ''"),
                         ("8..1", "range '8..1' runs backwards \\(write 1..8\\)"), ("-1", "cannot read '-1'"),
                         ("1..100", "every k must be in 1..64"), ("1.5", "cannot read '1.5'"),
                         ("1...3", "cannot read '1...3'"), ("2..1,0", "range .2..1. runs backwards")]:
        with pytest.raises(InputError, match=f"--num-draft-tokens: {message}"):
            parse_ks(bad)


def test_parse_temperatures():
    assert parse_temperatures("0, 0.7,1,1") == [0.0, 0.7, 1.0]
    for bad, message in [("0,,1", "cannot read ''"), ("", "cannot read ''"), ("nan", "every temperature must be a finite number >= 0"),
                         ("inf", "every temperature must be a finite number >= 0"), ("-1", "every temperature must be a finite number >= 0"), ("hot", "cannot read 'hot'")]:
        with pytest.raises(InputError, match=f"--temperatures: {message}"):
            parse_temperatures(bad)


@pytest.fixture(scope="module")
def small_draft_dir(tmp_path_factory, hf_tokenizer_dir) -> Path:
    return make_hf_checkpoint(tmp_path_factory.mktemp("draft"), hf_tokenizer_dir, seed=9, sliding_window=None,
                              rope_theta=1e6, num_hidden_layers=1)


def test_bench_writes_schema_checked_reports(hf_full_dir, small_draft_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello there\n\nWrite a poem\n")
    out = tmp_path / "report"
    res = run("bench", "--model", str(hf_full_dir), "--draft", str(small_draft_dir), "--prompts", str(prompts),
              "-n", "6", "--temperatures", "0,1", "-k", "1,2", "--repeats", "1", "--compare-mlx-lm", "-o", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == SCHEMA_VERSION and len(report["prompts"]) == 2
    assert set(report["timings"]) == {"weight_first_rows", "round_s"} and report["environment"]["mlx"]
    assert {t: sorted(r) for t, r in report["timings"]["round_s"].items()} == {"0": ["0", "1", "2"], "1": ["0", "1", "2"]}
    rows = report["rows"]
    assert len(rows) == 2 * (1 + 2 + 1 + 1 + 2)  # per T: plain, k=1,2, adaptive; mlx-lm plain, k=1,2
    for row in rows:
        assert ROW_KEYS <= set(row)
        assert row["peak_memory_gb"] > 0 and row["ttft_s"] is not None
        if isinstance(row["k"], int) and row["k"] > 0:  # adaptive may never draft here
            assert 0 <= row["acceptance"] <= 1 and row["tokens_per_round"] >= 1
            assert len(row["acceptance_per_position"]) >= 1
        if row["engine"] == "mlxspec" and isinstance(row["k"], int) and row["k"] > 0:
            assert row["predicted_speedup"] > 0
    for entry in report["comparison"]:
        assert {"mlxspec_best", "mlx-lm_best", "mlxspec_adaptive", "same_k_ratio", "best_vs_best"} <= set(entry)
        assert set(entry["same_k_ratio"]) == {"0", "1", "2"}
    md = (out / "report.md").read_text()
    assert md.count("\n| mlx-lm |") == 6 and "acceptance per position" in md
    try:
        import matplotlib  # noqa: F401
        plots = {p.name for p in out.glob("*.png")}
        assert plots == set(PLOT_FILES)
    except ImportError:
        assert "pip install 'mlxspec[plots]'" in res.stderr
    again = run("bench", "--model", str(hf_full_dir), "--draft", str(small_draft_dir), "--prompts", str(prompts),
                "-o", str(out))
    assert again.returncode != 0 and "--force" in again.stderr  # nothing overwritten without --force


def test_bench_bad_input(hf_full_dir, small_draft_dir, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    other = tmp_path / "other"
    shutil.copytree(small_draft_dir, other)
    (other / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')  # cannot be read
    base = ["bench", "--model", str(hf_full_dir), "-o", str(tmp_path / "out")]
    cases = [
        ([*base, "--draft", str(small_draft_dir), "--prompts", str(empty)], "no prompts"),
        ([*base, "--draft", str(small_draft_dir), "-k", "0"], "every k must be in 1..64"),
        ([*base, "--draft", str(other)], "cannot load tokenizer"),
        (["bench", "--pair", str(tmp_path), "-o", str(tmp_path / "out")], "no pair.json"),
        ([*base], "bench needs a draft"),
        ([*base, "--draft", str(small_draft_dir), "--temperatures", "x"], "--temperatures"),
    ]
    for args, message in cases:
        res = run(*args)
        lines = [l for l in res.stderr.strip().splitlines() if not l.startswith("warning:")]
        assert res.returncode != 0 and len(lines) == 1 and message in lines[0], (args, res.stderr)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def feature_draft_dir(tmp_path_factory, hf_full_dir) -> Path:
    """A random one-block feature draft for the `hf_full_dir` target, as a folder."""
    from mlxspec.models.config import load_model_args
    from mlxspec.drafts import FeatureDraft, draft_config

    t = load_model_args(hf_full_dir)
    mx.random.seed(12)
    draft = FeatureDraft(ModelArgs(hidden_size=t.hidden_size, num_hidden_layers=1, intermediate_size=t.intermediate_size,
                                   num_attention_heads=t.num_attention_heads, num_key_value_heads=t.num_key_value_heads,
                                   vocab_size=t.vocab_size, rope_theta=t.rope_theta))
    folder = tmp_path_factory.mktemp("feature-draft")
    (folder / "config.json").write_text(json.dumps(draft_config(draft)))
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(draft.parameters())))
    return folder


def test_bench_feature_draft_against_mlx_lm_with_a_draft_model(hf_full_dir, feature_draft_dir, small_draft_dir, tmp_path):
    base = ["bench", "--model", str(hf_full_dir), "--draft", str(feature_draft_dir), "-n", "4", "--temperatures", "0",
            "-k", "1", "--repeats", "1", "--no-adaptive", "--compare-mlx-lm", "--json", "--no-plots"]
    res = run(*base, "-o", str(tmp_path / "a"))
    assert res.returncode != 0 and "mlx-lm cannot run a feature draft" in res.stderr
    res = run(*base, "--mlx-lm-draft", str(small_draft_dir), "-o", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["drafts"]["mlxspec"].startswith("feature draft") and report["drafts"]["mlx-lm"].startswith("draft model")
    assert {(r["engine"], r["k"]) for r in report["rows"]} == {("mlxspec", 0), ("mlxspec", 1), ("mlx-lm", 0), ("mlx-lm", 1)}


def test_prompts_files(tmp_path):
    from mlxspec.prompts import read_prompts

    (tmp_path / "crlf.txt").write_bytes(b"first prompt\r\nline two\r\n---\r\nsecond prompt\r\n")
    assert [p for _, p in read_prompts(tmp_path / "crlf.txt")] == ["first prompt\nline two", "second prompt"]
    (tmp_path / "lines.txt").write_text("one\n\ntwo\n")
    assert [p for _, p in read_prompts(tmp_path / "lines.txt")] == ["one", "two"]
    (tmp_path / "seps.txt").write_text("---\n\n---\n")
    with pytest.raises(InputError, match="no prompts \\(the file holds only blank lines or '---' separators\\)"):
        read_prompts(tmp_path / "seps.txt")


def test_a_prompt_too_long_is_found_before_calibrating(hf_full_dir, small_draft_dir, monkeypatch):
    import mlxspec.bench as bench_module

    target, tokenizer = mlxspec.load(hf_full_dir)
    draft = mlxspec.load_draft(small_draft_dir, target, tokenizer)
    monkeypatch.setattr(bench_module, "Bench", lambda *a, **k: pytest.fail("calibrated before checking prompts"))
    prompts = [("chat", "Hello"), ("file", "word " * 600)]
    with pytest.raises(InputError, match="prompt 2 \\('word word"):
        bench_module.run_bench(target, tokenizer, draft, prompts, options=GenerationOptions(max_tokens=4))
