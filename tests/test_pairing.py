"""What kind of pair a target and a draft make, decided alike by `convert --target --draft`
and by loading: a draft with another tokenizer converts and loads as an other-vocabulary
pair; one whose tokens spell none of the target's is refused before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import mlxspec
from conftest import make_hf_checkpoint
from mlxspec.errors import InputError
from test_convert import run_cli


def test_a_pair_that_cannot_run_is_not_written(hf_full_dir, tmp_path):
    """convert and load agree on what a pair is: one generate would refuse (a draft whose
    tokens spell none of the target's) is refused before any weight is written."""
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers.models import WordLevel

    other = make_hf_checkpoint(tmp_path / "other", None, seed=3)
    words = {"[none]": 0, **{f"\u27e6{i}\u27e7": i + 1 for i in range(15)}}
    RustTokenizer(WordLevel(words, unk_token="[none]")).save(str(other / "tokenizer.json"))
    res = run_cli("convert", "--target", str(hf_full_dir), "--draft", str(other), "-o", str(tmp_path / "pair"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and "shares no token with the target's" in lines[0], res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
    with pytest.raises(InputError, match="shares no token"):
        mlxspec.load_draft(other, *mlxspec.load(hf_full_dir))


def test_a_pair_across_vocabularies_records_its_kind(hf_full_dir, sp_model_file, tmp_path):
    other = make_hf_checkpoint(tmp_path / "other", None, seed=3, vocab_size=32768)
    shutil.copy(Path(str(sp_model_file)).with_name("mistral_instruct_tokenizer_240216.model.v2"),
                other / "tokenizer.model")
    res = run_cli("convert", "--target", str(hf_full_dir), "--draft", str(other), "-o", str(tmp_path / "pair"))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "pair" / "pair.json").read_text())
    assert manifest["kind"] == "other-vocabulary" and "spell a target token" in manifest["tokenizers"]
    _, _, draft = mlxspec.load_pair(tmp_path / "pair")
    assert isinstance(draft, mlxspec.OtherVocabularyDraft)
