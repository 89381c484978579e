"""LiDAR projection, z-buffer, depth errors and LiDAR-anchored PSNR on synthetic scenes with known answers."""

import numpy as np
import pytest

from difix_refiner.data.pandaset import OPENCV_TO_OPENGL
from difix_refiner.evaluation import lidar_metrics as lm

W, H = 64, 48
K = lm.intrinsics_matrix(50.0, 50.0, 32.0, 24.0)
IDENTITY = np.eye(4)  # camera at the origin looking along +z (OpenCV axes)


def plane_points(z=10.0, step=0.05):
    """A dense grid on the plane z = ``z`` covering the whole view. # [N, 3]"""
    xs = np.arange(-8.0, 8.0, step)
    ys = np.arange(-6.0, 6.0, step)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)


def test_plane_depth_exact_and_known_bias():
    proj = lm.project_points(plane_points(), IDENTITY, K, W, H)
    truth = proj.depth_map()
    assert np.isfinite(truth).all()  # every pixel holds a point
    np.testing.assert_allclose(truth, 10.0)

    exact = lm.depth_errors(lm.depth_samples(proj, np.full((H, W, 1), 10.0), np.ones((H, W, 1))))
    assert exact["absrel"] == pytest.approx(0.0, abs=1e-12)
    assert exact["rmse_m"] == pytest.approx(0.0, abs=1e-12)
    assert exact["num_pixels"] == W * H

    biased = lm.depth_errors(lm.depth_samples(proj, np.full((H, W), 10.5), np.ones((H, W))))
    assert biased["absrel"] == pytest.approx(0.05)
    assert biased["rmse_m"] == pytest.approx(0.5)


def test_depth_ignores_unconfident_pixels():
    proj = lm.project_points(plane_points(), IDENTITY, K, W, H)
    depth = np.full((H, W), 10.0)
    acc = np.ones((H, W))
    depth[:, : W // 2] = 50.0  # garbage where the render is empty
    acc[:, : W // 2] = 0.2
    errs = lm.depth_errors(lm.depth_samples(proj, depth, acc, min_accumulation=0.5))
    assert errs["rmse_m"] == pytest.approx(0.0, abs=1e-12)
    assert errs["num_pixels"] == H * (W - W // 2)
    none = lm.depth_errors(lm.depth_samples(proj, depth, np.zeros((H, W))))
    assert none == {"absrel": None, "rmse_m": None, "num_pixels": 0}


def test_occluded_points_are_excluded():
    # Two points on the same ray (same pixel): only the near one is visible.
    near, far = np.array([0.0, 0.0, 5.0]), np.array([0.0, 0.0, 10.0])
    # A far point one pixel to the side of the near one: hidden with radius 1, visible in the plain z-buffer.
    side = np.array([10.0 * 1.0 / 50.0, 0.0, 10.0])
    pts = np.stack([near, far, side])
    plain = lm.project_points(pts, IDENTITY, K, W, H, lm.PLAIN_ZBUFFER)
    assert plain.visible.tolist() == [True, False, True]
    assert plain.depth_map()[24, 32] == pytest.approx(5.0)
    wide = lm.project_points(pts, IDENTITY, K, W, H, lm.Visibility(radius_px=1, rel_tol=0.05, abs_tol=0.1))
    assert wide.visible.tolist() == [True, False, False]
    # Behind the camera, too near, too far or outside the image: not inside.
    odd = np.array([[0.0, 0.0, -5.0], [0.0, 0.0, 0.1], [0.0, 0.0, 500.0], [100.0, 0.0, 10.0]])
    assert not lm.project_points(odd, IDENTITY, K, W, H).inside.any()


def test_lidar_anchored_psnr_hand_computed():
    # Real camera at the origin; the "shifted" camera 1 m to its right (OpenCV +x).
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    pts = np.array(
        [
            [0.0, 0.0, 10.0],  # seen by both
            [2.0, 1.0, 10.0],  # seen by both
            [-2.0, -1.0, 20.0],  # seen by both
            [1.2, 0.0, 20.0],  # visible in the real camera, hidden behind point 4 in the shifted one
            [1.1, 0.0, 10.0],  # occluder: in the shifted camera on the same ray as point 3
            [6.6, 0.0, 10.0],  # outside the real image (u = 65), inside the shifted one (u = 60)
        ]
    )
    # Point 4 lies on the shifted camera's ray through point 3: (1.1-1)/10 == (1.2-1)/20.
    real_view = lm.project_points(pts, IDENTITY, K, W, H, lm.PLAIN_ZBUFFER)
    shift_view = lm.project_points(pts, shifted, K, W, H, lm.PLAIN_ZBUFFER)
    assert real_view.visible.tolist() == [True, True, True, True, True, False]
    assert shift_view.visible.tolist() == [True, True, True, False, True, True]

    real_img = np.zeros((H, W, 3), dtype=np.uint8)
    render = np.zeros((H, W, 3), dtype=np.uint8)
    colours = {0: (200, 100, 50), 1: (10, 20, 30), 2: (255, 255, 255), 4: (90, 90, 90)}
    errors = {0: (10, 0, 0), 1: (0, 20, 0), 2: (-30, 0, 0), 4: (0, 0, 40)}  # render - real, per point
    for i, c in colours.items():
        col, row = real_view.pixels[i]
        real_img[row, col] = c
        col, row = shift_view.pixels[i]
        render[row, col] = np.array(c) + np.array(errors[i])
    samples = lm.lidar_colour_samples(real_view, real_img, shift_view, render)
    assert samples.real.shape == (4, 3)  # points 0, 1, 2, 4
    mse = np.mean(np.array([errors[i] for i in (0, 1, 2, 4)], dtype=np.float64) ** 2) / 255.0**2
    result = lm.samples_psnr(samples)
    assert result["num_points"] == 4
    assert result["psnr"] == pytest.approx(10 * np.log10(1.0 / mse))
    assert lm.samples_psnr(lm.ColourSamples.concat([])) == {"psnr": None, "num_points": 0}
    assert not samples.rendered_nearer.any()  # no rendered depth given

    # The render shows a surface at 7.5 m where point 1 (10 m) is, 25% nearer; the others' depth is right.
    depth = np.zeros((H, W))
    for i in (0, 1, 2, 4):
        col, row = shift_view.pixels[i]
        depth[row, col] = shift_view.depth[i] if i != 1 else 7.5
    split = lm.rendered_nearer_split(lm.lidar_colour_samples(real_view, real_img, shift_view, render, depth))
    assert split["share_rendered_nearer"] == pytest.approx(0.25)
    rest = np.mean(np.array([errors[i] for i in (0, 2, 4)], dtype=np.float64) ** 2) / 255.0**2
    assert split["psnr_not_rendered_nearer"] == pytest.approx(10 * np.log10(1.0 / rest))
    depth[shift_view.pixels[1][1], shift_view.pixels[1][0]] = 8.25  # 17.5% nearer: within the slack
    split = lm.rendered_nearer_split(lm.lidar_colour_samples(real_view, real_img, shift_view, render, depth))
    assert split["share_rendered_nearer"] == 0.0


def test_scene_to_world_undoes_a_dataparser_transform():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot_world = q * np.sign(np.linalg.det(q))  # proper rotation
    c2w_cv = np.eye(4)
    c2w_cv[:3, :3] = rot_world
    c2w_cv[:3, 3] = [5.0, -3.0, 1.5]
    # A transform with a rotation about z and a translation, then a scale.
    a = 0.3
    transform = np.array([[np.cos(a), -np.sin(a), 0, 1.0], [np.sin(a), np.cos(a), 0, -2.0], [0, 0, 1, 0.5]])
    scale = 0.2
    scene = np.eye(4)[:3]
    scene[:, :3] = transform[:, :3] @ rot_world @ OPENCV_TO_OPENGL
    scene[:, 3] = scale * (transform[:, :3] @ c2w_cv[:3, 3] + transform[:, 3])
    np.testing.assert_allclose(lm.scene_to_world_opencv(scene, transform, scale), c2w_cv, atol=1e-12)
    np.testing.assert_allclose(lm.scene_to_world_opencv(scene[None], transform, scale)[0], c2w_cv, atol=1e-12)
    with pytest.raises(ValueError):
        lm.scene_to_world_opencv(scene, transform, 0.0)


def test_points_near_frame_skips_missing_sweeps():
    sensors = np.zeros((10, 3))
    sweeps = {3: np.array([[5.0, 0, 0], [0.5, 0, 0]]), 5: np.array([[0, 6.0, 0]])}  # 4 is missing
    pts, used = lm.points_near_frame(sweeps, sensors, 4, window=1)
    assert used == [3, 5]
    assert len(pts) == 2  # the return 0.5 m from the sensor (the ego car) is dropped
    pts, used = lm.points_near_frame(sweeps, sensors, 8, window=1)
    assert used == [] and pts.shape == (0, 3)
    with pytest.raises(ValueError):
        lm.points_near_frame(sweeps, sensors, 4, window=-1)
