"""The packages the wheel holds, found rather than listed, so that a new subpackage ships
without an entry here: mlxspec/ and every package under it, and convert/, which lives at the
repository root and installs as `mlxspec.convert` (a mapping pyproject.toml's
`packages.find` cannot express). tests/ and benchmarks/ are not packages of the wheel.
Everything else about the build is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["mlxspec", "mlxspec.*"])
    + [f"mlxspec.{name}" for name in find_packages(include=["convert", "convert.*"])],
    package_dir={"mlxspec.convert": "convert"},
)
