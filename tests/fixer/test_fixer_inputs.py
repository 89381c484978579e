"""Input validation of the fixer."""

from __future__ import annotations

import pytest
import torch

from difix_refiner.fixer import Fixer


@pytest.fixture(scope="module")
def fixer() -> Fixer:
    return Fixer.tiny("difix")


def test_wrong_channels(fixer):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        fixer(torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        fixer(torch.rand(3, 16, 16))


def test_values_outside_unit_range(fixer):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fixer(torch.rand(1, 3, 16, 16) * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fixer(torch.rand(1, 3, 16, 16) - 0.5)
    nan = torch.rand(1, 3, 16, 16)
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        fixer(nan)
    with pytest.raises(ValueError, match="refs must hold"):
        fixer(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 3, 16, 16) + 1)


def test_integer_images_rejected(fixer):
    with pytest.raises(ValueError, match="floating-point"):
        fixer(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_batch_mismatch(fixer):
    with pytest.raises(ValueError, match="batch mismatch"):
        fixer(torch.rand(2, 3, 16, 16), torch.rand(3, 1, 3, 16, 16))


def test_ref_shape_and_size(fixer):
    with pytest.raises(ValueError, match="size"):
        fixer(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 3, 24, 16))
    with pytest.raises(ValueError, match=r"\[B, R, 3, H, W\]"):
        fixer(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 1, 16, 16))
    # A 4-D reference is read as one reference view.
    assert fixer(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_pix2pix_rejects_refs():
    p2p = Fixer.tiny("pix2pix-turbo")
    with pytest.raises(ValueError, match="single view"):
        p2p(torch.rand(1, 3, 16, 16), torch.rand(1, 1, 3, 16, 16))
