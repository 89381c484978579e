"""Moving-object masks of the refine loop: pseudo-view masks from scene-unit box corners agree with the
dataparser's masks of the same camera; reference masks resize; masks combine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from difix_refiner.data.pandaset_dataparser import PandasetDataParserConfig
from difix_refiner.distillation.moving_object_masks import (
    pseudo_view_moving_mask,
    reference_moving_mask,
    without_moving,
)
from difix_refiner.fixer.reference_masking import mask_reference

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"


@pytest.fixture(scope="module")
def outputs():
    cfg = PandasetDataParserConfig(data=SCENE, frame_start=38, frame_end=46, downscale_factor=2, load_lidar=False)
    return cfg.setup().get_dataparser_outputs("train")


def test_pseudo_view_mask_at_a_training_pose_is_the_dataparsers_mask(outputs):
    """Projected in scene units into the nerfstudio camera, the boxes cover the pixels the dataparser found in
    world metres for the same image (a pixel may differ where a box edge grazes a pixel centre)."""
    meta = outputs.metadata
    cams = outputs.cameras
    for i, frame in enumerate(meta["frame_indices"]):
        intr = {k: float(getattr(cams, k)[i]) for k in ("fx", "fy", "cx", "cy", "width", "height")}
        mask = pseudo_view_moving_mask(meta, frame, cams.camera_to_worlds[i].double().numpy(), intr, meta["metres_per_scene_unit"])
        expected = meta["dynamic_masks"][i]
        assert mask.shape == expected.shape and expected.any()
        assert (mask != expected).float().mean() < 1e-3


def test_no_boxes_no_masks():
    assert pseudo_view_moving_mask({}, 3, np.eye(4)[:3], {"fx": 1, "fy": 1, "cx": 1, "cy": 1, "width": 2, "height": 2}, 1.0) is None
    assert reference_moving_mask({"frame_indices": [0]}, 0, 4, 4) is None
    assert without_moving(None, None) is None


def test_reference_mask_resizes_and_masks_combine():
    masks = {"dynamic_masks": [torch.zeros(4, 6, dtype=torch.bool)]}
    assert reference_moving_mask(masks, 0, 4, 6) is None  # nothing moves: nothing to replace
    masks["dynamic_masks"][0][1, 3] = True
    half = reference_moving_mask(masks, 0, 2, 3)
    assert half.tolist() == [[False, True, False], [False, False, False]]  # a partly covered pixel counts
    alpha = torch.tensor([[True, True, False], [True, True, True]])[..., None]
    assert without_moving(alpha, half)[..., 0].tolist() == [[True, False, False], [True, True, True]]
    assert without_moving(None, half)[..., 0].tolist() == [[True, False, True], [True, True, True]]


def test_mask_reference_on_arrays_and_tensors():
    photo = np.full((2, 3, 3), 200, dtype=np.uint8)
    static = np.zeros((2, 3, 3), dtype=np.uint8)
    moving = np.array([[True, False, False], [False, False, True]])
    out = mask_reference(photo, moving, static)
    assert out[..., 0].tolist() == [[0, 200, 200], [200, 200, 0]]
    chw = torch.from_numpy(photo).permute(2, 0, 1).float()
    out_t = mask_reference(chw, torch.from_numpy(moving), torch.zeros_like(chw))
    assert out_t[1].tolist() == [[0, 200, 200], [200, 200, 0]]
    assert mask_reference(photo, None, static) is photo
