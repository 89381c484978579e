"""pyproject.toml: every package is installed, and the metadata uses the forms setuptools no longer warns about."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_is_installed():
    from setuptools import find_packages

    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = set(find_packages(str(REPO), include=include))
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "difix_refiner").rglob("__init__.py")}
    assert installed == found, "a package would be missing from the wheel"


def test_the_bundled_fixer_is_installed_where_it_is_looked_for():
    data_files = _pyproject()["tool"]["setuptools"]["data-files"]
    assert data_files["share/difix-refiner/fixer-small"] == ["examples/fixer-small/*"]
    assert (REPO / "examples" / "fixer-small" / "fixer_config.json").is_file()


def test_license_is_an_spdx_string():
    data = _pyproject()
    # A {text = ...} table makes setuptools >= 77 print a deprecation warning on every install.
    assert data["project"]["license"] == "Apache-2.0"
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in data["build-system"]["requires"])
