"""The wheel installs the converter as `mlxspec.convert`, never as a top-level `convert`,
carries the demo drafts and `py.typed`; `mlxspec.convert` is a plain function."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_convert_into_mlxspec(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next(tmp_path.glob("mlxspec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mlxspec/convert/converter.py" in names and "mlxspec/models/mistral.py" in names
    assert "mlxspec/py.typed" in names
    assert not any(n.startswith("convert/") for n in names)
    for f in ("config.json", "model.safetensors", "tokenizer.json", "training.json"):  # the demo drafts ship
        assert f"mlxspec/assets/smollm2-draft/{f}" in names
    for f in ("config.json", "model.safetensors", "training.json"):
        assert f"mlxspec/assets/smollm2-eagle/{f}" in names
    assert any(n.endswith("entry_points.txt") for n in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = "import mlxspec; from mlxspec.convert import gguf as m; print(m.__file__); print(mlxspec.__file__)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(target)) for p in out)


def test_editable_install_imports_convert_subpackage():
    import inspect

    import mlxspec
    from mlxspec.convert import gguf

    assert Path(gguf.__file__).resolve().parent == ROOT / "convert"
    assert inspect.isfunction(mlxspec.convert) and "bits" in inspect.signature(mlxspec.convert).parameters
    from mlxspec.convert import sources  # importing more of the subpackage leaves the function in place

    assert inspect.isfunction(mlxspec.convert) and sources.__name__ == "mlxspec.convert.sources"
