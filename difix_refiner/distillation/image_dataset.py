"""nerfstudio's image dataset, with a damaged image file named in the error.

nerfstudio's ``InputDataset`` opens images with PIL and lets its errors through, so a truncated JPEG
ended training with ``OSError: image file is truncated (124 bytes not processed)`` and no file name.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from nerfstudio.data.datasets.base_dataset import InputDataset

from difix_refiner.core.errors import InputError


class NamedImageDataset(InputDataset):
    """``InputDataset`` whose image reads fail with one sentence naming the file."""

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        """nerfstudio's image read (``[H, W, 3 or 4]`` uint8); a file PIL cannot decode raises ``InputError``."""
        try:
            return super().get_numpy_image(image_idx)
        except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for missing, truncated or bad files
            path = self._dataparser_outputs.image_filenames[image_idx]
            raise InputError(f"cannot read image {path}: {err}") from err
