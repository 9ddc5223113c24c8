"""The distribution installs every subpackage, and kernels/ only as lattice_ml.kernels."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def pyproject():
    path = ROOT / "pyproject.toml"
    if not path.exists():
        pytest.skip("not a source checkout")
    return tomllib.loads(path.read_text())


def test_every_subpackage_is_listed():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "lattice_ml").rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject packages: {sorted(found - listed)}"
    assert "kernels" not in listed


def test_kernels_map_under_the_library():
    tool = pyproject()["tool"]["setuptools"]
    assert tool["package-dir"] == {"lattice_ml.kernels": "kernels"}
    mod = importlib.import_module("lattice_ml.kernels")
    assert mod.__name__ == "lattice_ml.kernels"
    assert Path(mod.__file__).parent.name == "kernels"
