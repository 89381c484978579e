"""A full refine round on the CPU: pseudo views made, cached on disk, weighted and masked in the loss,
reloaded on resume, kept out of checkpoints, drawn in the viewer.

One tiny in-process ``ns-train difix-refiner`` run (examples/pandaset_002 frames 40-45 at a quarter of
their size, 2000 LiDAR seeds, the random ``tiny`` fixer): 4 iterations with refine rounds before steps 2
and 3, so the single novel camera (frame 41, target +1 m) goes to +0.5 m and then reaches +1 m.
"""

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_refine_run import seeded_trainer, tiny_refine_config


def tiny_config(out: Path, name: str, steps: int, **refine):
    """The shared tiny run with a refine round before every step from step 2 on, at the pseudo views' resolution."""
    cfg = tiny_refine_config(out, name, steps, steps_per_save=2, **{"steps_per_fix": 1, "first_fix_step": 2, **refine})
    cfg.save_only_latest_checkpoint = False
    cfg.pipeline.model.num_downscales = 0  # train at the pseudo views' resolution
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("refine_loop")
    trainer = seeded_trainer(tiny_config(out, "tiny", steps=4))
    assert trainer.pipeline.refine_state.fixer is None  # loaded lazily, at the first round
    trainer.train()
    return trainer


def run_dir(trainer) -> Path:
    return Path(trainer.base_dir)


def test_rounds_make_and_cache_pseudo_views(run):
    from difix_refiner.distillation.pseudo_views import PseudoViewStore

    pipeline = run.pipeline
    store = PseudoViewStore.load(run_dir(run) / "pseudo_views")
    assert [(r.step, r.offset_m, r.reached) for r in store.records] == [(2, 0.5, False), (3, 1.0, True)]
    for record in store.records:
        assert record.tracks == ["offset_+1.0m/front_camera/frame_0041"]
        assert record.references[0]["frame"] == 41 and record.references[0]["distance_m"] == pytest.approx(record.offset_m)
        assert (store.root / record.file).is_file() and (store.root / record.alpha_file).is_file()
    assert (store.root / "step_000002" / "offset_+0.5m_frame_0041.png").is_file()
    assert (store.root / "step_000003" / "offset_+1.0m_frame_0041.png").is_file()
    # The camera moved 0.5 m per round along the lateral axis and reached its target.
    cam = pipeline.novel_cameras[0]
    assert cam.reached and np.allclose(cam.current, cam.target)
    np.testing.assert_allclose(store.records[0].pose(), 0.5 * (cam.start + cam.target), atol=1e-6)

    # Both views are trained on; their images are the PNGs and their masks the stored opacity >= 0.5
    # without the pixels where moving objects' boxes of frame 41 project.
    from difix_refiner.distillation.moving_object_masks import pseudo_view_moving_mask

    meta = pipeline.datamanager.train_dataparser_outputs.metadata
    samples = {s.name: s for s in pipeline.datamanager.pseudo_views}
    assert sorted(samples) == sorted(r.file for r in store.records)
    for record in store.records:
        sample = samples[record.file]
        np.testing.assert_array_equal(sample.image.numpy(), np.asarray(Image.open(store.root / record.file)))
        alpha = np.asarray(Image.open(store.root / record.alpha_file)).astype(np.float32) / 255.0
        moving = pseudo_view_moving_mask(meta, 41, record.pose(), record.intrinsics, pipeline.refine_state.metres_per_scene_unit)
        assert 0 < moving.float().mean() < 0.5
        np.testing.assert_array_equal(sample.mask[..., 0].numpy(), (alpha >= 0.5) & ~moving.numpy())
        assert sample.camera.metadata is None  # no cam_idx: no camera-optimiser or bilateral-grid correction

    # Each round logged where its time went (benchmarks/distill.py reads this).
    rounds = [json.loads(line) for line in (store.root / "rounds.jsonl").read_text().splitlines()]
    assert [(r["step"], r["views"]) for r in rounds] == [(2, 1), (3, 1)]
    for r in rounds:
        assert r["render_s"] > 0 and r["fix_s"] > 0
        assert r["render_s"] + r["fix_s"] + r["load_fixer_s"] <= r["total_s"]
    assert rounds[0]["load_fixer_s"] > 0 and rounds[1]["load_fixer_s"] < rounds[0]["load_fixer_s"]  # loaded once

    # The fixer sits outside the module tree (so outside checkpoints).
    assert pipeline.refine_state.fixer is not None
    assert not any("fixer" in name for name, _ in pipeline.named_modules())
    assert not any("fixer" in key for key in pipeline.state_dict())


def test_pseudo_view_loss_is_weighted_and_masked(run):
    pipeline = run.pipeline
    model, dm = pipeline.model, pipeline.datamanager
    weight, lam = pipeline.config.refine.pseudo_view_loss_weight, model.config.ssim_lambda
    assert weight == 0.3
    saved_views, saved_fraction = list(dm.pseudo_views), dm.pseudo_view_fraction
    sample = saved_views[0]
    saved_mask = sample.mask
    sample.mask = saved_mask.clone()
    sample.mask[:, : sample.mask.shape[1] // 2] = False  # make sure the mask has holes
    dm.set_pseudo_views([sample])
    dm.pseudo_view_fraction = 1.0
    seen = {}
    next_train = dm.next_train

    def recording_next_train(step):
        camera, batch = next_train(step)
        seen["batch"] = batch
        return camera, batch

    dm.next_train = recording_next_train
    try:
        pipeline.train()
        outputs, loss_dict, metrics = pipeline.get_train_loss_dict(step=run.step + 1)
    finally:
        del dm.next_train
        sample.mask, dm.pseudo_view_fraction = saved_mask, saved_fraction
        dm.set_pseudo_views(saved_views)

    batch = seen["batch"]
    assert batch["pseudo_view"] == sample.name
    assert "main_loss" not in loss_dict and "pseudo_view_psnr" in metrics
    gt = batch["image"].float() / 255.0  # [H, W, 3]
    pred = outputs["rgb"].detach()
    mask = batch["mask"]  # [H, W, 1]
    assert mask.shape[:2] == gt.shape[:2] and 0 < mask.mean() < 1

    def photometric(a, b):
        ssim = model.ssim(a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None])
        return (1 - lam) * (a - b).abs().mean() + lam * (1 - ssim)

    expected = weight * photometric(gt * mask, pred * mask)
    unmasked = weight * photometric(gt, pred)
    got = loss_dict["pseudo_view_loss"].detach()
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, unmasked, rtol=1e-3, atol=0.0)


def test_reference_photos_show_no_moving_object(run):
    """The fixer's reference: the training photo, its moving-object pixels replaced by the model's render."""
    pipeline = run.pipeline
    meta = pipeline.datamanager.train_dataparser_outputs.metadata
    i = meta["frame_indices"].index(41)
    moving = meta["dynamic_masks"][i]  # [H, W]
    photo = pipeline.datamanager.cached_train[i]["image"][..., :3].float().permute(2, 0, 1) / 255.0  # [3, H, W]
    h, w = moving.shape
    ref = pipeline._reference_images([i], h, w)[0]  # [3, H, W]
    render = pipeline.render_pseudo_view(pipeline.datamanager.train_dataset.cameras[i : i + 1])["rgb"].permute(2, 0, 1)
    assert 0 < moving.float().mean() < 0.5
    torch.testing.assert_close(ref[:, ~moving], photo[:, ~moving])
    torch.testing.assert_close(ref[:, moving], render[:, moving].clamp(0, 1))


def test_checkpoints_hold_no_fixer_weights(run):
    ckpts = sorted((run_dir(run) / "nerfstudio_models").glob("step-*.ckpt"))
    assert [p.name for p in ckpts] == ["step-000000002.ckpt", "step-000000003.ckpt"]
    model_keys = {f"_model.{k}" for k in run.pipeline.model.state_dict()}
    for path in ckpts:
        state = torch.load(path, map_location="cpu", weights_only=False)
        keys = set(state["pipeline"])
        assert keys == model_keys | {"_extra_state"}  # the model's tensors and the resume state, nothing else
        assert set(state["pipeline"]["_extra_state"]) == {"version", "rng", "datamanager", "strategy", "cameras"}
        assert not any(word in key.lower() for key in keys for word in ("fixer", "unet", "vae", "lora"))
        assert set(state["optimizers"]) == set(run.optimizers.optimizers)


def test_resume_reloads_pseudo_views(run, tmp_path):
    from difix_refiner.distillation.pseudo_views import PseudoViewStore

    source = PseudoViewStore.load(run_dir(run) / "pseudo_views")
    models = run_dir(run) / "nerfstudio_models"

    # --load-checkpoint at step 2: only the round made before it comes back; the camera is at +0.5 m.
    cfg = tiny_config(tmp_path, "from_step2", steps=1)
    cfg.load_checkpoint = models / "step-000000002.ckpt"
    trainer = seeded_trainer(cfg)
    dm = trainer.pipeline.datamanager
    assert [s.name for s in dm.pseudo_views] == ["step_000002/offset_+0.5m_frame_0041.png"]
    cam = trainer.pipeline.novel_cameras[0]
    assert not cam.reached and np.allclose(cam.current, source.records[0].pose())
    copied = PseudoViewStore.load(Path(trainer.base_dir) / "pseudo_views")
    assert [r.file for r in copied.records] == [source.records[0].file]
    assert (copied.root / source.records[0].file).read_bytes() == (source.root / source.records[0].file).read_bytes()

    # --load-dir (latest, step 3): both views back, then one more round refreshes the +1 m view.
    # --max-num-iterations is the run's total on resume: 5 iterations end at step 4, one after the checkpoint.
    cfg = tiny_config(tmp_path, "from_dir", steps=5)
    cfg.load_dir = models
    trainer = seeded_trainer(cfg)
    dm = trainer.pipeline.datamanager
    assert sorted(s.name for s in dm.pseudo_views) == sorted(r.file for r in source.records)
    resumed = {s.name: s.image for s in dm.pseudo_views}
    original = {s.name: s.image for s in run.pipeline.datamanager.pseudo_views}
    for name in original:
        assert torch.equal(resumed[name], original[name])
    assert trainer.pipeline.novel_cameras[0].reached
    trainer.train()  # step 4: a round at the target again
    names = sorted(s.name for s in dm.pseudo_views)
    assert names == ["step_000002/offset_+0.5m_frame_0041.png", "step_000004/offset_+1.0m_frame_0041.png"]
    index = PseudoViewStore.load(Path(trainer.base_dir) / "pseudo_views")
    assert [r.step for r in index.records] == [2, 3, 4]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_draws_pseudo_views_as_cameras(run):
    import viser

    from difix_refiner.distillation.pseudo_views import PseudoViewStore

    class FakeViewerState:  # what the pipeline uses of nerfstudio's ViewerState
        def __init__(self, server):
            self.viser_server = server
            self.config = run.config.viewer

    pipeline = run.pipeline
    records = PseudoViewStore.load(run_dir(run) / "pseudo_views").records
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        pipeline.refine_state.viewer_state = FakeViewerState(server)
        pipeline._show_in_viewer(records)
        handles = pipeline.refine_state.frustums
        assert len(handles) == len(records)
        np.testing.assert_allclose(
            np.asarray(handles[-1].position), records[-1].pose()[:, 3] * 10.0, atol=1e-5
        )  # VISER_NERFSTUDIO_SCALE_RATIO
        pipeline._show_in_viewer(records[:1])  # a new round replaces the frustums
        assert len(pipeline.refine_state.frustums) == 1
    finally:
        pipeline.refine_state.viewer_state = None
        pipeline.refine_state.frustums = []
        server.stop()


def test_held_out_targets_use_poses_not_images(tmp_path):
    # Side cameras held out (the Difix3D+ driving protocol): novel cameras head for their poses.
    cfg = tiny_config(tmp_path, "held_out", steps=1, targets="held-out", first_fix_step=10**6)
    cfg.pipeline.datamanager.dataparser.eval_mode = "cross-camera"
    trainer = seeded_trainer(cfg)
    pipeline, dm = trainer.pipeline, trainer.pipeline.datamanager
    cams = pipeline.novel_cameras
    assert sorted(c.camera_name for c in cams) == ["front_left_camera", "front_right_camera"]
    eval_poses = dm.eval_dataset.cameras.camera_to_worlds.double().numpy()
    train_poses = dm.train_dataset.cameras.camera_to_worlds.double().numpy()
    for cam in cams:
        assert cam.kind == "held-out" and cam.intrinsics_split == "eval"
        np.testing.assert_allclose(cam.target, eval_poses[cam.intrinsics_index])
        assert any(np.allclose(cam.start, p) for p in train_poses)  # starts on the recorded path

    records = pipeline.refine_round(step=1)
    assert len(records) == 2 and all(r.kind == "held-out" for r in records)
    for record, cam in zip(records, cams):
        assert record.file.startswith(f"step_000001/toward_{cam.camera_name}_frame_{cam.frame:04d}_at_")
        eval_cam = dm.eval_dataset.cameras[cam.intrinsics_index]
        assert (record.intrinsics["width"], record.intrinsics["height"]) == (int(eval_cam.width), int(eval_cam.height))
        assert record.distance_from_start_m == pytest.approx(min(0.5, record.distance_from_start_m + record.distance_to_target_m))
        assert all(ref["camera_name"] == "front_camera" for ref in record.references)
    assert "cached_eval" not in vars(dm)  # the held-out images were never loaded
    assert len(dm.pseudo_views) == 2
