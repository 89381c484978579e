"""pyproject.toml: every package is installed, and the metadata uses the forms setuptools no longer warns about."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "difix_refiner").rglob("__init__.py")}
    assert found - listed == set(), "packages missing from [tool.setuptools] packages (a wheel would lack them)"
    assert listed - found == {"difix_refiner_method_configs"}


def test_license_is_an_spdx_string():
    data = _pyproject()
    # A {text = ...} table makes setuptools >= 77 print a deprecation warning on every install.
    assert data["project"]["license"] == "Apache-2.0"
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in data["build-system"]["requires"])
