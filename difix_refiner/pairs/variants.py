"""Several resolutions and training lengths in one make-pairs: one set of runs per combination.

A fixer trained on one scale of blur learns that scale only. With ``--downscale-factors`` and
``--iteration-counts`` make-pairs repeats its strategies for every (factor, count): each combination is a
:class:`Variant` whose runs, labels and photos carry a suffix (``underfit-25-d2-i300``), so they sit side
by side in one pair set. With one factor and one count nothing is suffixed and the output is exactly the
single-variant layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from difix_refiner.core.errors import InputError


@dataclass(frozen=True)
class Variant:
    """One resolution and training length of a make-pairs job."""

    downscale: Optional[int]
    """Image downscale factor of its runs (None: the dataparser's default)."""
    iterations: int
    """Training iterations of its runs."""
    suffix: str
    """Ends its run names and pair labels (``""`` when the job has one variant)."""
    folder: str
    """Sub-folder of its photos and hints (``""`` when the job has one resolution)."""

    def record(self) -> dict:
        """What the manifest says about it."""
        return {"downscale_factor": self.downscale, "iterations": self.iterations, "suffix": self.suffix}


def make_variants(downscales: Sequence[Optional[int]], iterations: Sequence[int]) -> List[Variant]:
    """Every (factor, count), factors outermost; suffixes name only what varies.

    Raises:
        InputError: a repeated factor or count.
    """
    if len(set(downscales)) != len(downscales):
        raise InputError(f"--downscale-factors repeats a factor: {list(downscales)}")
    if len(set(iterations)) != len(iterations):
        raise InputError(f"--iteration-counts repeats a count: {list(iterations)}")
    out = []
    for factor in downscales:
        folder = f"d{factor}" if len(downscales) > 1 else ""
        for count in iterations:
            suffix = (f"-d{factor}" if len(downscales) > 1 else "") + (f"-i{count}" if len(iterations) > 1 else "")
            out.append(Variant(factor, int(count), suffix, folder))
    return out
