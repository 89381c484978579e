"""The shipped 2-frame PandaSet release fixture and a per-test user cache, shared by the tests that read it."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "pandaset_release_002"
BOXES = REPO / "tests" / "fixtures" / "pandaset_002_cuboids"
EXAMPLE = REPO / "examples" / "pandaset_002"
FRAMES = (0, 1)


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch) -> Path:
    """Each test gets its own user cache (XDG_CACHE_HOME), so nothing is shared or left behind."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "difix_refiner" / "pandaset_release"
