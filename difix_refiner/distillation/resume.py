"""What a checkpoint must carry, beyond nerfstudio's weights and optimiser states, for a resumed run to
continue exactly like the uninterrupted one.

nerfstudio saves the Gaussians, the optimisers, the schedulers and the gradient scaler. Training also
carries, from one step to the next:

- the random streams: torch (random backgrounds, densification splits), numpy and Python's ``random``
  (nerfstudio's eval-image picks);
- the datamanager's order: the real views not yet seen this epoch and their shuffling generator, the
  eval views not yet picked, the pseudo-view coin and the pseudo views not yet seen this epoch;
- the densification statistics of gsplat's strategy (image-plane gradients, visibility counts, radii),
  which accumulate over many steps before each densification;
- the refine loop's novel cameras (current pose, whether at the target).

:func:`capture` turns these into a dictionary of tensors, numbers and lists (what ``torch.load`` reads with
``weights_only=True``), saved with the pipeline as its ``_extra_state``; :func:`restore` puts them back.
Pseudo views themselves come back from ``<run>/pseudo_views`` (see ``pseudo_views.py``).
"""

from __future__ import annotations

import random
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from nerfstudio.utils.rich_utils import CONSOLE

RESUME_STATE_VERSION = 1
"""Format version of the resume state."""
STRATEGY_KEYS = ("grad2d", "count", "radii")
"""Tensors of gsplat's DefaultStrategy state (``scene_scale`` is a constant of the config)."""


# ----------------------------------------------------------------------------------------- random streams


def capture_rng() -> Dict[str, Any]:
    """The torch (CPU and every initialised CUDA device), numpy and Python random states."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": _python_state(random.getstate()),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Set the random states captured by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state((np_state["name"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(_python_tuple(state["python"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _python_state(state: tuple) -> List[Any]:
    """``random.getstate()`` as lists (version, [625 ints], gauss_next)."""
    version, internal, gauss_next = state
    return [int(version), [int(v) for v in internal], gauss_next]


def _python_tuple(state: Sequence[Any]) -> tuple:
    version, internal, gauss_next = state
    return (int(version), tuple(int(v) for v in internal), gauss_next)


# ----------------------------------------------------------------------------------------- datamanager


def capture_datamanager(datamanager: Any) -> Dict[str, Any]:
    """The view order of a ``FullImageDatamanager`` (and the pseudo-view order of ours)."""
    state: Dict[str, Any] = {
        "train_unseen": [int(i) for i in getattr(datamanager, "train_unseen_cameras", [])],
        "eval_unseen": [int(i) for i in getattr(datamanager, "eval_unseen_cameras", [])],
    }
    generator = getattr(datamanager, "random_generator", None)  # nerfstudio's "random" camera sampling
    if generator is not None:
        state["train_generator"] = _python_state(generator.getstate())
    epoch_count = getattr(datamanager, "train_unsampled_epoch_count", None)  # its "fps" sampling
    if epoch_count is not None:
        state["train_unsampled_epoch_count"] = torch.from_numpy(np.asarray(epoch_count, dtype=np.float64))
    pseudo_rng = getattr(datamanager, "_pseudo_rng", None)
    if pseudo_rng is not None:
        state["pseudo_rng"] = _python_state(pseudo_rng.getstate())
        state["pseudo_unseen"] = [int(i) for i in datamanager._pseudo_unseen]
        state["pseudo_views"] = [view.name for view in datamanager.pseudo_views]
    return state


def restore_datamanager(datamanager: Any, state: Dict[str, Any]) -> List[str]:
    """Put back what :func:`capture_datamanager` saved; returns what could not be restored (for a warning).

    Call after the pseudo views are published again (publishing starts a new pseudo-view epoch)."""
    problems: List[str] = []
    num_train = len(datamanager.train_dataset)
    if all(0 <= i < num_train for i in state["train_unseen"]) and state["train_unseen"]:
        datamanager.train_unseen_cameras = list(state["train_unseen"])
    else:
        problems.append("the real-view order (the training split changed)")
    eval_dataset = getattr(datamanager, "eval_dataset", None)
    num_eval = 0 if eval_dataset is None else len(eval_dataset)
    if all(0 <= i < num_eval for i in state["eval_unseen"]):
        datamanager.eval_unseen_cameras = list(state["eval_unseen"])
    if "train_generator" in state and getattr(datamanager, "random_generator", None) is not None:
        datamanager.random_generator.setstate(_python_tuple(state["train_generator"]))
    if "train_unsampled_epoch_count" in state and hasattr(datamanager, "train_unsampled_epoch_count"):
        datamanager.train_unsampled_epoch_count = state["train_unsampled_epoch_count"].numpy().copy()
    if "pseudo_rng" in state and hasattr(datamanager, "_pseudo_rng"):
        datamanager._pseudo_rng.setstate(_python_tuple(state["pseudo_rng"]))
        names = [view.name for view in datamanager.pseudo_views]
        if names == state["pseudo_views"]:
            datamanager._pseudo_unseen = list(state["pseudo_unseen"])
        else:
            problems.append(
                f"the pseudo-view order ({len(state['pseudo_views'])} views at the checkpoint, {len(names)} reloaded)"
            )
    return problems


# ----------------------------------------------------------------------------------------- model, cameras


def capture_strategy(strategy_state: Dict[str, Any]) -> Dict[str, Optional[torch.Tensor]]:
    """gsplat's densification statistics (CPU copies; None before the first step)."""
    return {k: None if strategy_state.get(k) is None else strategy_state[k].detach().cpu().clone()
            for k in STRATEGY_KEYS if k in strategy_state}  # fmt: skip


def restore_strategy(strategy_state: Dict[str, Any], saved: Dict[str, Optional[torch.Tensor]], num_gaussians: int,
                     device: torch.device) -> bool:
    """Put the statistics back (on ``device``); False when they do not fit the loaded Gaussians."""
    if any(v is not None and v.shape[0] != num_gaussians for v in saved.values()):
        return False
    for key, value in saved.items():
        if key in strategy_state:
            strategy_state[key] = None if value is None else value.to(device).clone()
    return True


def capture_cameras(cameras: Sequence[Any]) -> Dict[str, Any]:
    """The novel cameras' tracks, current poses ``[T, 3, 4]`` float64 and whether each reached its target."""
    return {
        "tracks": [c.track for c in cameras],
        "current": torch.from_numpy(np.stack([np.asarray(c.current, dtype=np.float64) for c in cameras]))
        if cameras
        else torch.zeros((0, 3, 4), dtype=torch.float64),
        "reached": [bool(c.reached) for c in cameras],
    }


def restore_cameras(cameras: Sequence[Any], saved: Dict[str, Any]) -> bool:
    """Move the novel cameras back; False (nothing changed) when the tracks are not the checkpoint's."""
    if [c.track for c in cameras] != list(saved["tracks"]):
        return False
    current = saved["current"].numpy()  # [T, 3, 4]
    for cam, pose, reached in zip(cameras, current, saved["reached"]):
        cam.current, cam.reached = pose.copy(), bool(reached)
    return True


def warn(problems: Sequence[str]) -> None:
    """One console line when a resume cannot be exact."""
    if problems:
        CONSOLE.log(
            "[yellow]difix-refiner: the checkpoint's resume state does not fit this run for "
            + "; ".join(problems)
            + ": training continues, but will not match an uninterrupted run exactly[/yellow]"
        )


def warn_missing() -> None:
    """One console line when a loaded checkpoint holds no resume state (written by an older version)."""
    CONSOLE.log(
        "[yellow]difix-refiner: the checkpoint holds no resume state (an older version wrote it): training "
        "continues, but will not match an uninterrupted run exactly[/yellow]"
    )


# ----------------------------------------------------------------------------------------- the pipeline


def capture(pipeline: Any) -> Dict[str, Any]:
    """Everything above for a training pipeline (``DifixRefinerPipeline``), at a checkpoint."""
    model = pipeline.model
    return {
        "version": RESUME_STATE_VERSION,
        "rng": capture_rng(),
        "datamanager": capture_datamanager(pipeline.datamanager),
        "strategy": capture_strategy(getattr(model, "strategy_state", {}) or {}),
        "cameras": capture_cameras(pipeline.refine_state.cameras),
    }


def restore(pipeline: Any, state: Dict[str, Any]) -> None:
    """Put a checkpoint's resume state back into a pipeline whose weights and pseudo views are loaded.

    The random streams come last: call this right before training continues."""
    if state.get("version") != RESUME_STATE_VERSION:
        warn([f"its format (version {state.get('version')!r}, this code reads {RESUME_STATE_VERSION})"])
        return
    problems = restore_datamanager(pipeline.datamanager, state["datamanager"])
    model = pipeline.model
    if hasattr(model, "strategy_state") and not restore_strategy(
        model.strategy_state, state["strategy"], int(model.means.shape[0]), model.device
    ):
        problems.append("the densification statistics (another Gaussian count)")
    if pipeline.refine_state.cameras and not restore_cameras(pipeline.refine_state.cameras, state["cameras"]):
        problems.append("the novel cameras (other refine-loop targets)")
    restore_rng(state["rng"])
    warn(problems)
