"""Streaming mp4 writer that works offline.

nerfstudio's ``mediapy`` needs an ``ffmpeg`` executable, and imageio's ffmpeg plugin needs the
``imageio-ffmpeg`` package; neither is guaranteed. PyAV (``av``, a nerfstudio dependency) bundles
the ffmpeg libraries, so it is tried first; ``mediapy`` is the fallback.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import numpy as np


def _even(image: np.ndarray) -> np.ndarray:
    """Pad ``[H, W, 3]`` to even height and width by repeating the last row/column (H.264 needs it)."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return image


def video_backend() -> Optional[str]:
    """``"av"``, ``"mediapy"`` or ``None`` when no mp4 encoder is usable here."""
    try:
        import av

        if "libx264" in av.codecs_available or "mpeg4" in av.codecs_available:
            return "av"
    except ImportError:
        pass
    if shutil.which("ffmpeg"):
        try:
            import mediapy  # noqa: F401

            return "mediapy"
        except ImportError:
            pass
    return None


class Mp4Writer:
    """Write ``uint8 [H, W, 3]`` RGB frames to an mp4 one at a time.

    Use as a context manager; all frames must share one size.
    """

    def __init__(self, path: Path, fps: float) -> None:
        if not np.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.backend = video_backend()
        if self.backend is None:
            raise RuntimeError("no mp4 encoder available (install PyAV, or ffmpeg for mediapy)")
        self._container = None
        self._stream = None
        self._frames: List[np.ndarray] = []  # only used by the mediapy fallback
        self._shape = None

    def __enter__(self) -> "Mp4Writer":
        return self

    def write(self, image: np.ndarray) -> None:
        """Append one frame."""
        image = _even(np.asarray(image, dtype=np.uint8))
        if self._shape is None:
            self._shape = image.shape
        elif image.shape != self._shape:
            raise ValueError(f"frame size changed from {self._shape} to {image.shape}")
        if self.backend == "mediapy":
            self._frames.append(image)
            return
        from fractions import Fraction

        import av

        if self._container is None:
            self._container = av.open(str(self.path), mode="w", format="mp4")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=Fraction(self.fps).limit_denominator(1000))
            self._stream.width, self._stream.height = image.shape[1], image.shape[0]
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Flush and close the file."""
        if self.backend == "mediapy":
            import mediapy

            if self._frames:
                mediapy.write_video(str(self.path), np.stack(self._frames), fps=self.fps)
            self._frames = []
            return
        if self._container is not None:
            for packet in self._stream.encode():  # flush delayed frames
                self._container.mux(packet)
            self._container.close()
            self._container = None

    def __exit__(self, *exc) -> None:
        self.close()
