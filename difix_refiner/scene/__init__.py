"""A reconstructed scene: the splatfacto-based model, a trained run and the ns-train runner.

- ``model``: the ``difix-refiner`` model (splatfacto on CPU or CUDA).
- ``trained_run``: a trained run's config, recorded cameras and scale; loading and rendering it.
- ``shift_options``: the options that shift a run's recorded path.
- ``ns_train``: running ``ns-train`` as a subprocess (the demo, make-pairs, benchmarks).

Importing this package also applies the process-wide fix nerfstudio 1.1.5 needs on current torch.
"""

from __future__ import annotations

import numpy as np
import torch


def _allow_numpy_scalars_in_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (torch >= 2.6 default) read nerfstudio 1.1.5 checkpoints.

    nerfstudio's exponential-decay scheduler stores learning rates as numpy float64 in the optimiser
    and scheduler state, so ``ns-eval``, ``ns-render``, ``ns-export`` and resuming all fail on load.
    Only numpy scalar reconstruction is allowed; arbitrary pickled objects stay rejected.
    """
    try:
        from numpy.core.multiarray import scalar
    except ImportError:  # numpy >= 2 moved it
        from numpy._core.multiarray import scalar  # type: ignore[no-redef]

    kinds = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_)
    torch.serialization.add_safe_globals([scalar, np.dtype] + [type(np.dtype(k)) for k in kinds])


_allow_numpy_scalars_in_checkpoints()
