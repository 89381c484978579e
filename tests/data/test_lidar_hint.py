"""The LiDAR hint: known points land on the right pixels, nearer points hide farther ones, empty pixels
stay unknown, and on the bundled drive the hint at a photo's own pose shows that photo."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from difix_refiner.data.lidar import colour_points
from difix_refiner.data.lidar_hint import (
    HintSettings,
    colour_points_visible,
    hint_cloud,
    hint_tensor,
    nearest_per_pixel,
    opengl_to_opencv,
    render_lidar_hint,
)
from difix_refiner.data.pandaset import (
    PandasetCamera,
    load_camera,
    load_lidar_positions,
    load_lidar_sweeps,
)

SCENE = Path(__file__).resolve().parents[2] / "examples" / "pandaset_002"
K = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
W, H = 100, 80
PLAIN = HintSettings(splat_radius_px=0, occlusion_radius_px=0, rel_tol=0.0, abs_tol=0.0)
RED, GREEN, BLUE, WHITE = [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]


def test_points_land_on_their_pixels_and_the_nearest_wins():
    points = np.array(
        [
            [0.0, 0.0, 10.0],  # u = 50, v = 40
            [1.0, 0.5, 10.0],  # u = 60, v = 45
            [0.0, 0.0, 20.0],  # behind the first: hidden
            [2.0, 0.0, 20.0],  # u = 60, v = 40, behind the next one
            [1.0, 0.0, 10.0],  # u = 60, v = 40
            [0.0, 0.0, -10.0],  # behind the camera
            [10.0, 0.0, 10.0],  # u = 150: outside the image
            [0.0, 0.0, 0.2],  # nearer than the near plane
        ]
    )
    colours = np.array([RED, GREEN, BLUE, BLUE, WHITE, BLUE, BLUE, BLUE], dtype=np.uint8)
    hint = render_lidar_hint(points, colours, K, np.eye(4), W, H, PLAIN)
    assert hint.rgb.shape == (H, W, 3) and hint.mask.shape == (H, W) and hint.depth.shape == (H, W)
    expected = {(40, 50): (RED, 10.0), (45, 60): (GREEN, 10.0), (40, 60): (WHITE, 10.0)}
    assert sorted(zip(*np.nonzero(hint.mask))) == sorted(expected)
    for (row, col), (colour, depth) in expected.items():
        np.testing.assert_allclose(hint.rgb[row, col], np.array(colour) / 255.0)
        assert hint.depth[row, col] == pytest.approx(depth)
    # Unknown, not black: no colour and infinite depth wherever no point is.
    assert np.all(hint.rgb[~hint.mask] == 0) and np.all(np.isinf(hint.depth[~hint.mask]))
    assert hint.coverage == pytest.approx(3 / (W * H))


def test_the_pose_is_camera_to_world():
    # A camera moved 1 m along x sees the point at x = 1 straight ahead, in its centre pixel.
    c2w = np.eye(4)
    c2w[0, 3] = 1.0
    hint = render_lidar_hint(np.array([[1.0, 0.0, 5.0]]), np.array([RED], dtype=np.uint8), K, c2w, W, H, PLAIN)
    assert list(zip(*np.nonzero(hint.mask))) == [(40, 50)]
    # Turned 90 degrees about y (looking along +x), it sees a point on the world's x axis.
    turn = np.eye(4)
    turn[:3, :3] = [[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]  # columns: camera x, y, z in the world
    hint = render_lidar_hint(np.array([[5.0, 0.0, 0.0]]), np.array([RED], dtype=np.uint8), K, turn, W, H, PLAIN)
    assert list(zip(*np.nonzero(hint.mask))) == [(40, 50)]
    # nerfstudio's OpenGL axes (y up, z back) describe the same camera after the flip.
    gl = turn.copy()
    gl[:3, 1:3] *= -1.0
    np.testing.assert_allclose(opengl_to_opencv(gl), turn)


def test_far_points_do_not_show_through_gaps_of_a_near_surface():
    # A sparse wall at 5 m (a point every 3 pixels) in front of a dense background at 30 m.
    cols, rows = np.meshgrid(np.arange(20, 80, 3) + 0.5, np.arange(20, 60, 3) + 0.5)
    wall = np.stack([(cols.ravel() - 50) / 100 * 5, (rows.ravel() - 40) / 100 * 5, np.full(cols.size, 5.0)], 1)
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    back = np.stack([(cols.ravel() - 50) / 100 * 30, (rows.ravel() - 40) / 100 * 30, np.full(cols.size, 30.0)], 1)
    points = np.concatenate([wall, back])
    colours = np.concatenate([np.tile(RED, (len(wall), 1)), np.tile(BLUE, (len(back), 1))]).astype(np.uint8)
    inner = (slice(22, 57), slice(22, 77))  # well inside the wall

    plain = render_lidar_hint(points, colours, K, np.eye(4), W, H, PLAIN)
    assert plain.mask[inner].all() and (plain.depth[inner] == 30.0).mean() > 0.8  # the background leaks through

    hint = render_lidar_hint(points, colours, K, np.eye(4), W, H, HintSettings(splat_radius_px=0, occlusion_radius_px=2))
    assert not np.any(hint.depth[inner][hint.mask[inner]] > 5.0)  # inside the wall: only the wall
    assert hint.mask[0:15, :].all() and np.all(hint.depth[0:15, :] == 30.0)  # around it: the background
    # Splatting covers each point's 3x3 neighbourhood: the sparse wall becomes a solid one.
    splat = render_lidar_hint(points, colours, K, np.eye(4), W, H, HintSettings(splat_radius_px=1, occlusion_radius_px=2))
    assert splat.mask[inner].all() and np.all(splat.depth[inner] == 5.0)
    np.testing.assert_allclose(splat.rgb[inner], 1.0 * (np.arange(3) == 0) + np.zeros_like(splat.rgb[inner]))


def test_hint_tensor_is_rgb_and_mask_with_unknown_pixels_zero():
    rgb = np.full((4, 5, 3), 0.5, dtype=np.float32)
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 2] = True
    t = hint_tensor(rgb, mask)
    assert t.shape == (4, 4, 5)
    assert t[3].sum() == 1 and t[3, 1, 2] == 1 and t[:3, 1, 2].tolist() == [0.5, 0.5, 0.5]
    assert t[:3].sum() == pytest.approx(1.5)


def _camera(tmp_path: Path, image: np.ndarray) -> PandasetCamera:
    path = tmp_path / "00.png"
    Image.fromarray(image).save(path)
    return PandasetCamera("cam", np.array([0]), [path], np.eye(4)[None], 100.0, 100.0, 50.0, 40.0, W, H, np.zeros(1))


def test_colouring_skips_photos_in_which_the_point_is_hidden(tmp_path):
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[40, 50] = RED
    image[40, 60] = GREEN
    cam = _camera(tmp_path, image)
    # A near point and one right behind it (same pixel), and a lone far point elsewhere.
    points = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 15.0], [2.0, 0.0, 20.0]])
    frames = np.zeros(3, dtype=np.int64)
    colours, seen = colour_points_visible(points, frames, [cam])
    assert seen.tolist() == [True, False, True]
    assert colours[0].tolist() == RED and colours[2].tolist() == GREEN
    # The plain colouring (no occlusion test) paints the hidden point with the occluder's colour.
    plain, plain_seen = colour_points(points, frames, [cam])
    assert plain_seen.tolist() == [True, True, True] and plain[1].tolist() == RED


def test_fast_at_480x270_with_100k_points():
    rng = np.random.default_rng(0)
    points = rng.uniform([-20, -5, 2], [20, 5, 60], size=(100_000, 3))
    colours = rng.integers(0, 256, size=(100_000, 3), dtype=np.uint8)
    k = np.array([[300.0, 0, 240], [0, 300.0, 135], [0, 0, 1]])
    render_lidar_hint(points[:10], colours[:10], k, np.eye(4), 480, 270)  # imports warm
    start = time.perf_counter()
    hint = render_lidar_hint(points, colours, k, np.eye(4), 480, 270)
    assert time.perf_counter() - start < 1.5, "one hint should take well under a second"
    assert hint.coverage > 0.1  # a random volume hides much of itself


def test_bundled_drive_hint_shows_the_photo_at_its_own_pose():
    frames = list(range(40, 46))
    cam = load_camera(SCENE, "front_camera", frames, verify_images=False)
    points, colours = hint_cloud(load_lidar_sweeps(SCENE, frames), load_lidar_positions(SCENE), [cam], voxel_size=0.1)
    assert len(points) > 5000 and colours.dtype == np.uint8
    i = 3
    hint = render_lidar_hint(points, colours, cam.K, cam.c2w_opencv[i], cam.width, cam.height)
    photo = np.asarray(Image.open(cam.image_paths[i]).convert("RGB"), dtype=np.float32) / 255.0
    assert 0.1 < hint.coverage < 0.9
    error = np.abs(hint.rgb - photo).mean(-1)[hint.mask]  # [valid pixels]
    assert np.median(error) < 0.06, np.median(error)
    assert np.all(hint.depth[hint.mask] >= 0.5) and np.all(hint.depth[hint.mask] <= 80.0)


def test_nearest_per_pixel_keeps_the_nearest_and_breaks_ties_by_index():
    pixel = np.array([5, 5, 7, 2, 2])
    depth = np.array([5.0, 4.0, 1.0, 3.0, 3.0])
    assert nearest_per_pixel(pixel, depth).tolist() == [3, 1, 2]  # pixel order; pixel 2's tie goes to entry 3
    assert nearest_per_pixel(np.zeros(0, dtype=np.int64), np.zeros(0)).tolist() == []
