"""The LiDAR depth loss and the moving-object mask in the model's loss, and training with and without them."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_refine_run import EXAMPLE, short_pandaset_run, tiny_model

from difix_refiner.scene.depth_loss import depth_loss, targets_on_grid
from difix_refiner.scene.lidar_batch import SPLIT_FILE, add_lidar_entries

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ------------------------------------------------------------------------------------------ the loss


@pytest.mark.parametrize("device", DEVICES)
def test_loss_at_a_lower_resolution_keeps_the_nearest_return(device):
    """Targets in pixels of an 8x12 image on a 4x6 render: (2.3, 1.1) and (3.9, 0.2) share render pixel
    (1, 0), whose nearest return (z = 1) counts; (10.5, 7.5) lands in (5, 3) with z = 2."""
    depth = torch.full((4, 6, 1), 2.0, device=device, requires_grad=True)
    targets = torch.tensor([[2.3, 1.1, 4.0], [3.9, 0.2, 1.0], [10.5, 7.5, 2.0]], device=device)
    pixels, z = targets_on_grid(targets, (8, 12), (4, 6))
    assert pixels.tolist() == [1, 23] and z.tolist() == [1.0, 2.0]
    for form, value, slope in (
        ("log", math.log(2.0) / 2, 1.0 / (2 * 2.0)),  # |log 2 - log 1| / 2; d/dd |log d - log 1| / 2 at d = 2
        ("inverse", abs(1 / 2.0 - 1.0) / 2, 1.0 / (2 * 2.0**2)),  # |1/2 - 1| / 2; d/dd (1 - 1/d) / 2 at d = 2
    ):
        depth.grad = None
        loss = depth_loss(depth, targets, (8, 12), form=form)
        assert loss.item() == pytest.approx(value), form
        loss.backward()
        grad = depth.grad[..., 0]
        assert grad[0, 1].item() == pytest.approx(slope), form
        assert torch.count_nonzero(grad).item() == 1  # the exact pixel (z = 2) has zero gradient; nothing else is touched
    # At full resolution each return keeps its own pixel.
    assert targets_on_grid(targets, (8, 12), (8, 12))[0].tolist() == [3, 14, 7 * 12 + 10]


@pytest.mark.parametrize("device", DEVICES)
def test_loss_is_zero_where_no_returns_fall(device):
    depth = torch.rand(4, 6, 1, device=device, requires_grad=True)
    for targets in (torch.zeros((0, 3)), torch.tensor([[-1.0, 2.0, 3.0], [12.0, 1.0, 3.0], [1.0, 8.0, 3.0]])):
        loss = depth_loss(depth, targets, (8, 12))
        assert loss.item() == 0.0 and loss.device.type == device
        loss.backward()
        assert torch.count_nonzero(depth.grad).item() == 0


def test_batch_without_lidar_metadata_is_unchanged():
    batch = {"image_idx": 0, "image": torch.zeros(2, 2, 3)}
    assert add_lidar_entries(dict(batch), {"frame_indices": [0]}, torch.device("cpu")).keys() == batch.keys()
    meta = {"dynamic_masks": [torch.zeros(2, 2, dtype=torch.bool)], "lidar_depth": [torch.zeros((0, 3))]}
    out = add_lidar_entries(dict(batch), meta, torch.device("cpu"))
    assert "mask" not in out and out["lidar_depth"].shape == (0, 3)  # no moving pixel: no mask


# ------------------------------------------------------------------------------------------ the model's loss


def _camera():
    from nerfstudio.cameras.cameras import Cameras

    cam = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=40.0, fy=40.0, cx=16.0, cy=12.0, width=32, height=24)
    cam.metadata = {"cam_idx": 0}
    return cam


@pytest.mark.parametrize("stationary", [False, True])
def test_moving_object_pixels_leave_the_loss_and_stationary_ones_do_not(stationary):
    """The photo changed inside a box: the loss does not notice when the box moves (masked), and does when
    the object is stationary (no mask)."""
    model = tiny_model()
    model.train()
    outputs = model.get_outputs(_camera())
    box = torch.zeros(24, 32, dtype=torch.bool)
    box[5:15, 8:20] = not stationary  # the dataparser masks only moving objects' boxes
    meta = {"dynamic_masks": [box]}
    photo = torch.rand(24, 32, 3)
    changed = photo.clone()
    changed[5:15, 8:20] = 1.0 - changed[5:15, 8:20]
    losses = []
    for image in (photo, changed):
        batch = add_lidar_entries({"image_idx": 0, "image": image}, meta, torch.device("cpu"))
        losses.append(model.get_loss_dict(outputs, batch)["main_loss"].item())
    if stationary:
        assert losses[0] != losses[1]
    else:
        assert losses[0] == pytest.approx(losses[1], abs=1e-12)


def test_a_depth_only_render_gives_the_same_depth_and_geometry_gradients():
    """render_view(depth_only=True) (the side-view depth loss's render) against the colour-and-depth render."""
    model = tiny_model()
    model.train()
    targets = torch.tensor([[16.0, 12.0, 3.0], [10.0, 10.0, 2.5], [20.0, 8.0, 3.5]])
    results = []
    for depth_only in (False, True):
        torch.manual_seed(1)  # the random background is drawn either way
        model.zero_grad()
        outputs, _ = model.render_view(_camera(), render_depth=True, depth_only=depth_only)
        assert (outputs["rgb"] is None) == depth_only
        depth_loss(outputs["depth"], targets, (24, 32)).backward()
        grads = {k: model.gauss_params[k].grad.clone() for k in ("means", "scales", "quats", "opacities")}
        results.append((outputs["depth"].detach(), grads, torch.rand(1)))
    (d_full, g_full, r_full), (d_only, g_only, r_only) = results
    assert d_full.abs().max() > 0 and g_full["means"].abs().max() > 0
    torch.testing.assert_close(d_only, d_full, rtol=1e-6, atol=1e-7)
    for key in g_full:
        torch.testing.assert_close(g_only[key], g_full[key], rtol=1e-5, atol=1e-9)
    assert torch.equal(r_full, r_only)  # the same RNG draws: a run keeps its random stream


def test_depth_is_rendered_and_supervised_only_with_targets():
    model = tiny_model()
    model.train()
    outputs = model.get_outputs(_camera())
    assert outputs["depth"] is not None  # the dataparser gives targets: training renders depth
    targets = torch.tensor([[16.0, 12.0, 3.0], [10.0, 10.0, 2.5]])
    losses = model.get_loss_dict(outputs, {"image": torch.rand(24, 32, 3), "lidar_depth": targets})
    assert losses["depth_loss"].item() > 0
    assert "depth_loss" not in model.get_loss_dict(outputs, {"image": torch.rand(24, 32, 3)})
    model.kwargs["metadata"] = {}  # a dataparser without LiDAR: no depth render in training, no depth loss
    assert model.get_outputs(_camera())["depth"] is None


# ------------------------------------------------------------------------------------------ short CPU runs


def _run(out: Path, name: str, steps: int, weight: float, data: Path = EXAMPLE, **dataparser):
    def configure(cfg):
        cfg.pipeline.model.depth_loss_weight = weight
        cfg.pipeline.model.num_random = 2000  # the initialisation without LiDAR

    return short_pandaset_run(out, name, steps, data, configure, **dataparser)


def _training_depth_error(trainer) -> float:
    """mean |log d - log z| of the full-resolution renders at every training image's own LiDAR targets."""
    pipeline = trainer.pipeline
    meta = pipeline.datamanager.train_dataparser_outputs.metadata
    cams = pipeline.datamanager.train_dataset.cameras
    errors = []
    pipeline.model.eval()
    with torch.no_grad():
        for i, targets in enumerate(meta["lidar_depth"]):
            if len(targets) == 0:
                continue
            depth = pipeline.model.get_outputs(cams[i : i + 1])["depth"]  # [H, W, 1]
            errors.append(depth_loss(depth, targets, tuple(depth.shape[:2])).item())
    return float(np.mean(errors))


def test_depth_loss_lowers_depth_error_against_training_lidar(tmp_path):
    plain = _run(tmp_path, "plain", 40, weight=0.0)
    supervised = _run(tmp_path, "depth", 40, weight=0.5)
    assert (Path(plain.base_dir) / SPLIT_FILE).is_file()  # the split goes with the run's outputs
    e_plain, e_depth = _training_depth_error(plain), _training_depth_error(supervised)
    assert e_depth < 0.8 * e_plain, (e_plain, e_depth)


def test_dataparser_without_boxes_or_lidar_trains_exactly_as_before(tmp_path):
    """No annotations, no lidar/ folder: the depth-loss weight changes nothing, batches carry no extras."""
    bare = tmp_path / "bare"
    shutil.copytree(EXAMPLE, bare, ignore=shutil.ignore_patterns("annotations", "lidar"))
    runs = [_run(tmp_path, f"w{w}", 6, weight=w, data=bare, load_lidar=False) for w in (0.0, 0.5)]
    params = [{k: v.detach().clone() for k, v in r.pipeline.model.gauss_params.items()} for r in runs]
    for key in params[0]:
        assert torch.equal(params[0][key], params[1][key]), key
    _, batch = runs[1].pipeline.datamanager.next_train(0)
    assert not {"mask", "lidar_depth"} & set(batch)
    assert "lidar_sweep_split" not in runs[1].pipeline.datamanager.train_dataparser_outputs.metadata
