"""Which frames make test pairs and which make train pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from difix_refiner.core.errors import InputError


@dataclass(frozen=True)
class FrameSplit:
    """Frames ``[test_start, test_end)`` make test pairs; every other frame makes train pairs."""

    test_start: int
    test_end: int

    def split(self, frame: int) -> str:
        """``"test"`` or ``"train"``."""
        return "test" if self.test_start <= frame < self.test_end else "train"


def resolve_test_frames(
    frames: Sequence[int], test_frames: Optional[Tuple[int, int]], test_fraction: float
) -> FrameSplit:
    """Check the test frame range against the available frames, or derive it from the fraction.

    Args:
        frames: All frame indices the pairs can come from (sorted or not).
        test_frames: ``(start, end)``, end exclusive; ``None`` takes the last ``test_fraction``.
        test_fraction: Share of the frames, at the end of the range, held out when ``test_frames`` is None.

    Raises:
        InputError: an empty or reversed range, a range outside the frames, or one leaving no train frame.
    """
    frames = sorted(set(int(f) for f in frames))
    if not frames:
        raise InputError("no frames to make pairs from")
    lo, hi = frames[0], frames[-1] + 1
    if test_frames is None:
        if not (0.0 <= test_fraction < 1.0):
            raise InputError(f"--test-fraction must be in [0, 1), got {test_fraction}")
        count = int(round(len(frames) * test_fraction))
        if test_fraction > 0 and count == 0:
            count = 1
        if count >= len(frames):
            raise InputError(f"--test-fraction {test_fraction} leaves no training frame among {len(frames)}")
        if count == 0:
            return FrameSplit(hi, hi)  # no test pairs
        return FrameSplit(frames[len(frames) - count], hi)
    if len(test_frames) != 2:
        raise InputError(f"--test-frames takes two numbers START END (end exclusive), got {list(test_frames)}")
    start, end = int(test_frames[0]), int(test_frames[1])
    if start >= end:
        raise InputError(f"--test-frames {start} {end} is empty: START must be below END (END is exclusive)")
    if start < lo or end > hi:
        raise InputError(f"--test-frames {start} {end} is outside the frames in use [{lo}, {hi})")
    inside = [f for f in frames if start <= f < end]
    if not inside:
        raise InputError(f"--test-frames {start} {end} holds none of the frames in use")
    if len(inside) == len(frames):
        raise InputError(f"--test-frames {start} {end} covers every frame in use [{lo}, {hi}); no training pairs would remain")
    return FrameSplit(start, end)
