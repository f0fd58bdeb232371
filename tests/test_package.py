"""The wheel, as a user gets it: built from a clean copy of the tree without a build warning,
holding every module of mlxspec/ and of convert/ (installed as `mlxspec.convert`, never as a
top-level `convert`), the demo drafts, the server's chat page and `py.typed`, and nothing else
at the top level; then installed NON-editable into a fresh venv, where the commands answer and the drafts load.
Also: the editable install maps convert/ to `mlxspec.convert`, a plain function."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"mlxspec": ROOT / "mlxspec", "mlxspec.convert": ROOT / "convert"}  # convert/ installs as mlxspec.convert
COMMANDS = {"bench", "chat", "convert", "demo", "distill", "generate", "plan", "serve"}  # at least these
DIST_INFO = "mlxspec-0.1.0.dist-info"
# A build's own warnings (setuptools' deprecations and layout warnings) and pip's.
WARNING = re.compile(r"\w+Warning: |\bWARNING: |\bERROR: ")


def not_sources(folder: str, names: list[str]) -> list[str]:
    """What the copy the wheel is built from leaves out: environments, caches and earlier
    build output (setuptools would put a stale build/lib into the wheel)."""
    top = {".git", ".venv", "build", "dist", ".pytest_cache"} if Path(folder) == ROOT else set()
    results = {"results"} if Path(folder) == ROOT / "benchmarks" else set()
    return [n for n in names if n in top | results or n == "__pycache__" or n.endswith(".egg-info")]


def clean_env() -> dict[str, str]:
    """This process's environment without what would put other code on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(argv: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> tuple[Path, str]:
    """The wheel built from a copy of the tree (tests/ and benchmarks/ included: they must not
    be found as packages), with the venv's setuptools (no network in tests), and what the
    build printed."""
    where = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, where / "src", ignore=not_sources)
    res = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
               "--disable-pip-version-check", "-v", "-w", where, where / "src"], cwd=where, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return next(where.glob("mlxspec-*.whl")), res.stdout + res.stderr


def test_the_build_prints_no_warning(wheel):
    _, printed = wheel
    assert "running bdist_wheel" in printed  # -v: the build backend's own output is in `printed`
    assert not [line for line in printed.splitlines() if WARNING.search(line)], printed[-4000:]


def test_the_wheel_holds_every_module_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel[0]).namelist())
    expected = {f"{package.replace('.', '/')}/{path.relative_to(folder).as_posix()}"
                for package, folder in PACKAGES.items() for path in folder.rglob("*.py")}
    assert len(expected) > 60 and not expected - names, sorted(expected - names)
    assert {"mlxspec/distill/run.py", "mlxspec/pipeline/stages.py", "mlxspec/convert/converter.py"} <= names
    assert {n.split("/")[0] for n in names} == {"mlxspec", DIST_INFO}  # no convert/, tests/, benchmarks/
    assert zipfile.ZipFile(wheel[0]).read(f"{DIST_INFO}/top_level.txt").decode().split() == ["mlxspec"]
    assert "mlxspec/py.typed" in names and f"{DIST_INFO}/entry_points.txt" in names
    for draft in ("smollm2-draft", "smollm2-eagle"):  # the demo drafts ship, every file of them
        shipped = {p.name for p in (ROOT / "mlxspec" / "assets" / draft).iterdir()}
        assert {"config.json", "model.safetensors", "training.json"} <= shipped
        assert {f"mlxspec/assets/{draft}/{name}" for name in shipped} <= names
    page = {p.name for p in (ROOT / "mlxspec" / "assets" / "web").iterdir()}  # the server's chat page
    assert {"index.html", "chat.css", "chat.js"} <= page and {f"mlxspec/assets/web/{n}" for n in page} <= names


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (pip install --no-deps, not editable). Its
    dependencies are this venv's, read in place (nothing downloaded): a folder named in a
    .pth file joins sys.path, but the .pth files inside it are not run, so mlxspec's editable
    finder there stays out; before the wheel is installed, mlxspec cannot be imported."""
    where = tmp_path_factory.mktemp("venv")
    res = run([sys.executable, "-m", "venv", "--without-pip", where], cwd=where)
    assert res.returncode == 0, res.stderr
    python = where / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], where).stdout.strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    res = run([python, "-c", "import mlxspec"], cwd=where)
    assert res.returncode != 0 and "No module named 'mlxspec'" in res.stderr, (res.stdout, res.stderr)
    res = run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
               "--disable-pip-version-check", "-q", wheel[0]], cwd=where, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return where


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


IMPORTS = """
import importlib, importlib.util, json
names = ("mlxspec", "mlxspec.convert.gguf", "mlxspec.distill", "mlxspec.pipeline", "mlxspec.serve")
files = [importlib.import_module(name).__file__ for name in names]  # mlxspec.convert is also a function
print(json.dumps({"files": files, "others": [importlib.util.find_spec(n) is not None
                                             for n in ("convert", "tests", "benchmarks")]}))
"""


def test_the_installed_package_is_the_wheels(venv):
    site = site_packages(venv)
    res = run([venv / "bin" / "python", "-c", IMPORTS], cwd=venv)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert all(Path(f).is_relative_to(site / "mlxspec") for f in found["files"]), found
    assert found["others"] == [False, False, False]
    record = (site / DIST_INFO / "RECORD").read_text().splitlines()
    installed = {line.split(",")[0] for line in record}
    assert {p.split("/")[0] for p in installed if not p.startswith("..")} == {"mlxspec", DIST_INFO}
    assert {p for p in installed if p.startswith("..")} == {"../../../bin/mlxspec"}


LIST_COMMANDS = "import typer, mlxspec.cli; print(*sorted(typer.main.get_command(mlxspec.cli.app).commands))"


def test_every_command_answers_help(venv):
    res = run([venv / "bin" / "python", "-c", LIST_COMMANDS], cwd=venv)
    assert res.returncode == 0, res.stderr
    commands = res.stdout.split()
    assert COMMANDS <= set(commands), commands
    runs = [[venv / "bin" / "python", "-m", "mlxspec", "--help"], [venv / "bin" / "mlxspec", "--help"]]
    for argv in runs + [[venv / "bin" / "mlxspec", command, "--help"] for command in commands]:
        res = run(argv, cwd=venv)
        assert res.returncode == 0 and "Usage" in res.stdout, (argv, res.stdout, res.stderr)


DRAFTS = """
import json, mlxspec
from mlxspec.demo import demo_draft, demo_token_draft
from mlxspec.models.config import load_model_args
args = load_model_args(demo_draft())
model, tokenizer = mlxspec.load(demo_token_draft())
print(json.dumps({"feature": str(demo_draft()), "draft": str(demo_token_draft()), "taps": args.feature_layers,
                  "layers": model.args.num_hidden_layers, "tokens": tokenizer.encode("Hello there")}))
"""


def test_the_demo_drafts_load_from_the_installed_package(venv):
    res = run([venv / "bin" / "python", "-c", DRAFTS], cwd=venv)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assets = site_packages(venv) / "mlxspec" / "assets"
    assert Path(found["feature"]) == assets / "smollm2-eagle" and Path(found["draft"]) == assets / "smollm2-draft"
    for folder in ("smollm2-eagle", "smollm2-draft"):
        assert (assets / folder / "config.json").is_file() and (assets / folder / "model.safetensors").is_file()
    config = json.loads((ROOT / "mlxspec" / "assets" / "smollm2-eagle" / "config.json").read_text())
    assert found["taps"] == config["feature_layers"] and found["layers"] >= 1 and found["tokens"]


def test_editable_install_imports_convert_subpackage():
    import inspect

    import mlxspec
    from mlxspec.convert import gguf

    assert Path(gguf.__file__).resolve().parent == ROOT / "convert"
    assert inspect.isfunction(mlxspec.convert) and "bits" in inspect.signature(mlxspec.convert).parameters
    from mlxspec.convert import sources  # importing more of the subpackage leaves the function in place

    assert inspect.isfunction(mlxspec.convert) and sources.__name__ == "mlxspec.convert.sources"
