"""Missing perceptual weights: explicit request -> clear error; preset -> loss off with one warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_clip_tokenizer import save_letters_clip_tokenizer

from difix_refiner.training.discriminator import DiscriminatorConfig
from difix_refiner.training.objectives import (
    LossDisabledWarning,
    PairedObjective,
    PairedObjectiveConfig,
    UnpairedObjective,
    UnpairedObjectiveConfig,
)
from difix_refiner.training.perceptual import (
    TORCHVISION_VGG16_FILE,
    PerceptualBackbones,
    PerceptualConfig,
    PerceptualWeightsError,
    RandomInitWarning,
    build_clip,
    build_vgg16,
)

NO_WEIGHTS = PerceptualConfig(search_caches=False)


def test_explicit_lpips_without_weights_names_file_and_option():
    with pytest.raises(PerceptualWeightsError) as info:
        PairedObjective(PairedObjectiveConfig(lpips=1.0, perceptual=NO_WEIGHTS))
    msg = str(info.value)
    assert "lpips=1" in msg
    assert "perceptual.vgg_weights" in msg and TORCHVISION_VGG16_FILE in msg
    assert "perceptual.lpips_weights" in msg


def test_explicit_gram_and_clip_without_weights_fail():
    with pytest.raises(PerceptualWeightsError, match="vgg_weights"):
        PairedObjective(PairedObjectiveConfig(lpips=0.0, gram=0.5, perceptual=NO_WEIGHTS))
    with pytest.raises(PerceptualWeightsError, match="perceptual.clip_model"):
        PairedObjective(PairedObjectiveConfig(preset="pix2pix-turbo", lpips=0, gan=0, clip=5.0, perceptual=NO_WEIGHTS))


def test_preset_losses_turn_off_with_one_warning_each():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objective = PairedObjective(PairedObjectiveConfig(preset="difix", no_download_fallback=False, perceptual=NO_WEIGHTS))
    disabled = [w for w in caught if issubclass(w.category, LossDisabledWarning)]
    assert len(disabled) == 2  # lpips and gram, one warning each
    assert all("vgg_weights" in str(w.message) for w in disabled)
    assert objective.weights == {"l2": 1.0}
    assert set(objective.disabled) == {"lpips", "gram"}
    out, tgt = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further warnings while training
        total, terms = objective(out, tgt, step=10_000)
    assert set(terms) == {"l2"}
    assert total.item() == pytest.approx(((out - tgt) ** 2).mean().item())


def test_pix2pix_preset_turns_off_clip_and_gan():
    with pytest.warns(LossDisabledWarning):
        objective = PairedObjective(PairedObjectiveConfig(preset="pix2pix-turbo", no_download_fallback=False, perceptual=NO_WEIGHTS))
    assert objective.weights == {"l2": 1.0}
    assert not objective.has_gan and objective.discriminator_parameters() == []
    with pytest.raises(RuntimeError, match="no GAN"):
        objective.discriminator_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_require_weights_makes_presets_explicit():
    with pytest.raises(PerceptualWeightsError):
        PairedObjective(PairedObjectiveConfig(preset="difix", require_weights=True, perceptual=NO_WEIGHTS))


def test_given_path_that_does_not_exist_is_an_error(tmp_path: Path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(PerceptualWeightsError, match="nope.pth"):
        build_vgg16(PerceptualConfig(vgg_weights=str(missing)))
    with pytest.raises(PerceptualWeightsError, match="does not exist"):
        build_clip(PerceptualConfig(clip_model=str(tmp_path / "no_clip")))


def test_bad_vgg_file_is_reported(tmp_path: Path):
    path = tmp_path / "vgg.pth"
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(PerceptualWeightsError, match="not a torchvision VGG16"):
        build_vgg16(PerceptualConfig(vgg_weights=str(path)))


def test_torchvision_cache_is_found(tmp_path: Path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        state = {f"features.{k}": v for k, v in build_vgg16(PerceptualConfig(random_init=True)).features.state_dict().items()}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / TORCHVISION_VGG16_FILE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real weights: no random-init warning
        vgg = build_vgg16(PerceptualConfig())
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
    with pytest.raises(PerceptualWeightsError):
        build_vgg16(PerceptualConfig(search_caches=False))


def test_random_init_warns_and_is_seeded():
    with pytest.warns(RandomInitWarning):
        a = build_vgg16(PerceptualConfig(random_init=True))
    with pytest.warns(RandomInitWarning):
        b = build_vgg16(PerceptualConfig(random_init=True))
    assert torch.equal(a.features[0].weight, b.features[0].weight)


def test_clip_loads_from_local_folder(tmp_path: Path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=54, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)).eval()
    model.save_pretrained(tmp_path / "clip")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomInitWarning)
        clip = build_clip(PerceptualConfig(clip_model=str(tmp_path / "clip")))
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        expected = model.visual_projection(model.vision_model(pixel_values=clip.preprocess(x)).pooler_output)
        assert torch.allclose(clip.encode_image(x), expected, atol=1e-5)
    assert clip.embed_dim == 16 and not any(p.requires_grad for p in clip.parameters())
    # The folder has no tokenizer: asking for prompt similarity says what is missing.
    with pytest.raises(PerceptualWeightsError, match="tokenizer"):
        build_clip(PerceptualConfig(clip_model=str(tmp_path / "clip")), text=True)

    # With a (tiny, letters-only) tokenizer in the folder the prompt path works.
    save_letters_clip_tokenizer(tmp_path, tmp_path / "clip")
    clip = build_clip(PerceptualConfig(clip_model=str(tmp_path / "clip")), text=True)
    ids = clip.tokenizer(["remove degradation"], return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model.text_projection(model.text_model(input_ids=ids).pooler_output)
    assert torch.allclose(clip.encode_text(["remove degradation"]), expected, atol=1e-5)


def test_unpaired_preset_lpips_off_with_warning_and_gan_backbone_required():
    cfg = UnpairedObjectiveConfig(discriminator=DiscriminatorConfig(kind="patch", patch_channels=4, patch_layers=1), perceptual=NO_WEIGHTS)
    with pytest.warns(LossDisabledWarning, match="cycle_lpips and identity_lpips"):
        objective = UnpairedObjective(cfg)
    assert set(objective.weights) == {"cycle_l1", "identity_l1", "gan"}
    with pytest.raises(PerceptualWeightsError, match="cycle_lpips=10"):
        UnpairedObjective(UnpairedObjectiveConfig(cycle_lpips=10.0, perceptual=NO_WEIGHTS, discriminator=cfg.discriminator))
    # The GAN's backbone is always required: without it the objective cannot translate.
    with pytest.raises(PerceptualWeightsError, match="kind patch"):
        UnpairedObjective(UnpairedObjectiveConfig(cycle_lpips=0, identity_lpips=0, perceptual=NO_WEIGHTS))


def test_backbones_share_the_vgg_trunk():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomInitWarning)
        b = PerceptualBackbones(PerceptualConfig(random_init=True))
        assert b.lpips().trunk is b.vgg()
