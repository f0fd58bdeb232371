"""The fit check: a run that does not fit is refused with one line before any weight is read
(loading is made to fail, so reaching it shows up), and --no-fit-check runs it anyway."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

from mlxspec.cli import app
from mlxspec.plan import named
from mlxspec.plan.device import DeviceLimit

from conftest import make_hf_checkpoint

runner = CliRunner()
loading = importlib.import_module("mlxspec.load")  # the module (mlxspec.load is also a function)


class Loaded(Exception):
    """Raised where a weight would be read."""


@pytest.fixture
def small_device(monkeypatch):
    """This machine with 1 MB of memory, and loading that fails loudly."""
    monkeypatch.setattr(named, "this_device", lambda: DeviceLimit("a tiny machine", 1e6, "physical memory"))

    def no_loading(*args, **kwargs):
        raise Loaded()

    monkeypatch.setattr(loading, "read_weights", no_loading)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, hf_tokenizer_dir):
    return make_hf_checkpoint(tmp_path_factory.mktemp("fit"), hf_tokenizer_dir, seed=5)


def commands(model: str, out: str) -> dict[str, list[str]]:
    return {"generate": ["generate", "-m", model, "-p", "hi", "--max-tokens", "4"],
            "chat": ["chat", "-m", model],
            "serve": ["serve", "-m", model, "--port", "65001"],
            "bench": ["bench", "-m", model, "--draft", "ngram", "-o", out],
            "distill": ["distill", "--target", model, "-o", out]}


@pytest.mark.parametrize("command", ["generate", "chat", "serve", "bench", "distill"])
def test_refused_before_loading(small_device, model_dir, tmp_path, command):
    args = commands(str(model_dir), str(tmp_path / "out"))[command]
    result = runner.invoke(app, args, input="")
    assert result.exit_code == 3, result.output
    line = result.output.strip()
    assert line.count("\n") == 0 and line.startswith("error: ")
    assert "does not fit: needs" in line and "the device allows 0.00 GB (physical memory)" in line
    assert "--no-fit-check to run anyway" in line and "try " in line


def test_no_fit_check_goes_on_to_load(small_device, model_dir):
    with pytest.raises(Loaded):
        runner.invoke(app, ["generate", "-m", str(model_dir), "-p", "hi", "--no-fit-check"], catch_exceptions=False)


def test_fitting_run_is_not_refused(monkeypatch, model_dir):
    def no_loading(*args, **kwargs):
        raise Loaded()

    monkeypatch.setattr(loading, "read_weights", no_loading)
    with pytest.raises(Loaded):  # the check passed, then loading began
        runner.invoke(app, ["generate", "-m", str(model_dir), "-p", "hi"], catch_exceptions=False)


def test_malformed_config_is_one_line_before_loading(small_device, tmp_path, model_dir):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    (folder / "config.json").write_text('{"model_type": "mistral", "hidden_size": -1}')
    result = runner.invoke(app, ["generate", "-m", str(folder), "-p", "hi"])
    assert result.exit_code != 0 and result.output.startswith("error: ") and result.output.strip().count("\n") == 0
