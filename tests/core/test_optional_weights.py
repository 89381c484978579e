"""The optional-weights registry and `difix-refiner weights`: places, presence, checked atomic fetches, offline failures."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from difix_refiner.core import optional_weights as ow
from difix_refiner.core import weights_fetch as wf


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache: torch.hub.get_dir() reads TORCH_HOME at call time."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_registry_lists_every_optional_weight_once():
    names = ow.weight_names()
    assert names == ["lpips-alex", "vgg16", "lpips-vgg", "clip", "inception", "sd-turbo"]
    for w in ow.registry():
        assert w.enables and w.what and w.size
        if w.kind == "file":
            assert w.url and (w.sha256 or w.sha256_prefix), w.name
        if w.kind == "hub":
            assert w.repo_id and w.hub_files, w.name


def test_file_places_are_torchvisions_cache_names(torch_home):
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    checkpoints = torch_home / "hub" / "checkpoints"
    assert ow.alexnet_path() == checkpoints / "alexnet-owt-7be5be79.pth"
    assert ow.vgg16_path() == checkpoints / "vgg16-397923af.pth"
    assert ow.get_weight("lpips-alex").url == AlexNet_Weights.IMAGENET1K_V1.url
    assert ow.get_weight("vgg16").url == VGG16_Weights.IMAGENET1K_V1.url
    # torch.hub's convention: the name carries the first hex digits of the file's sha256.
    assert ow.get_weight("lpips-alex").sha256_prefix == "7be5be79"
    assert ow.get_weight("vgg16").sha256_prefix == "397923af"
    inception = ow.get_weight("inception")
    assert inception.sha256.startswith(inception.sha256_prefix) and len(inception.sha256) == 64


def test_inception_is_the_file_torch_fidelity_loads():
    fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    assert ow.INCEPTION_URL == fidelity.URL_INCEPTION_V3


def test_the_loaders_look_where_the_registry_says(torch_home):
    """LPIPS (ns-eval, eval), the fixer's VGG16 and FID's default all use the registry's paths."""
    from difix_refiner.core.lpips import LazyLPIPS, alexnet_weights_path
    from difix_refiner.fixer.presets import DEFAULT_BASE
    from difix_refiner.training import perceptual

    assert Path(alexnet_weights_path()) == ow.alexnet_path()
    assert perceptual.torchvision_vgg16_cache_path() == ow.vgg16_path()
    assert perceptual.lpips_package_weights() == ow.lpips_vgg_linear_path()
    assert perceptual.DEFAULT_CLIP_HUB_ID == ow.CLIP_HUB_ID
    assert DEFAULT_BASE == ow.SD_TURBO_HUB_ID

    config = perceptual.PerceptualConfig()
    assert not LazyLPIPS().available and perceptual.resolve_vgg_weights(config) is None
    for path in (ow.alexnet_path(), ow.vgg16_path()):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert LazyLPIPS().available
    assert perceptual.resolve_vgg_weights(config) == ow.vgg16_path()


def test_presence_follows_the_files(torch_home, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not any(w.present() for w in ow.registry() if w.kind != "package")
    assert ow.get_weight("lpips-vgg").present()  # ships with the lpips package

    ow.inception_path().parent.mkdir(parents=True)
    ow.inception_path().write_bytes(b"x")
    assert ow.get_weight("inception").present()

    # A hub model counts as present once every required file is in the cache at `main`.
    clip = ow.get_weight("clip")
    repo = tmp_path / "hub" / "models--openai--clip-vit-base-patch32"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for name in ("config.json", "vocab.json", "merges.txt"):
        (snapshot / name).write_text("{}")
    assert clip.missing_files() == ["model.safetensors"]
    (snapshot / "pytorch_model.bin").write_bytes(b"x")  # the alternative weight file counts too
    assert clip.present()


# --------------------------------------------------------------------------- fetching files


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on localhost serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = lambda *a, **k: _Files(*a, directory=str(root), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _served_weight(root: Path, base: str, dest: Path, payload: bytes, published: str) -> ow.OptionalWeight:
    (root / "weights-test-00000000.pth").write_bytes(payload)
    return dataclasses.replace(
        ow.get_weight("inception"), url=f"{base}/weights-test-00000000.pth", sha256=published, location=lambda: dest
    )


def test_fetch_file_downloads_checks_and_publishes_atomically(server, tmp_path):
    root, base = server
    payload = os.urandom(3 * wf.CHUNK_BYTES + 17)  # several chunks
    dest = tmp_path / "cache" / "checkpoints" / "weights-test-00000000.pth"
    weight = _served_weight(root, base, dest, payload, hashlib.sha256(payload).hexdigest())
    assert wf.fetch_file(weight, progress=False) == dest
    assert dest.read_bytes() == payload
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]  # no temporary left

    # A second fetch keeps the verified file; a corrupted one is replaced.
    mtime = dest.stat().st_mtime_ns
    wf.fetch_file(weight, progress=False)
    assert dest.stat().st_mtime_ns == mtime
    dest.write_bytes(b"corrupt")
    wf.fetch_file(weight, progress=False)
    assert dest.read_bytes() == payload


def test_fetch_file_discards_a_download_with_the_wrong_checksum(server, tmp_path):
    root, base = server
    dest = tmp_path / "cache" / "w.pth"
    weight = _served_weight(root, base, dest, b"not the published file", "ab" * 32)
    with pytest.raises(wf.WeightsFetchError) as err:
        wf.fetch_file(weight, progress=False)
    message = str(err.value)
    assert "SHA-256" in message and "discarded" in message and "\n" not in message
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_the_hash_prefix_in_the_name_is_checked_when_no_full_hash_is_published(server, tmp_path):
    root, base = server
    payload = b"some weights"
    good = dataclasses.replace(
        _served_weight(root, base, tmp_path / "a.pth", payload, ""),
        sha256=None,
        sha256_prefix=hashlib.sha256(payload).hexdigest()[:8],
    )
    assert wf.fetch_file(good, progress=False).read_bytes() == payload
    bad = dataclasses.replace(good, sha256_prefix="00000000", location=lambda: tmp_path / "b.pth")
    with pytest.raises(wf.WeightsFetchError):
        wf.fetch_file(bad, progress=False)
    assert not (tmp_path / "b.pth").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_file_fails_in_one_sentence_when_the_server_is_unreachable(tmp_path):
    weight = dataclasses.replace(
        ow.get_weight("inception"), url=f"http://127.0.0.1:{_closed_port()}/w.pth", location=lambda: tmp_path / "w.pth"
    )
    with pytest.raises(wf.WeightsFetchError) as err:
        wf.fetch_file(weight, progress=False)
    message = str(err.value)
    assert message.startswith("cannot fetch inception from http://127.0.0.1:") and "check the network" in message
    assert "\n" not in message and not (tmp_path / "w.pth").exists()


def test_offline_mode_refuses_before_connecting(server, tmp_path, monkeypatch):
    root, base = server
    weight = _served_weight(root, base, tmp_path / "w.pth", b"x", hashlib.sha256(b"x").hexdigest())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for w in (weight, ow.get_weight("sd-turbo")):
        with pytest.raises(wf.WeightsFetchError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
            wf.fetch(w, progress=False)
    assert not (tmp_path / "w.pth").exists()


# --------------------------------------------------------------------------- hub checks


def test_hub_files_are_checked_against_the_hubs_checksums(tmp_path):
    small = tmp_path / "config.json"
    small.write_text('{"a": 1}\n')
    git_id = subprocess.run(["git", "hash-object", str(small)], capture_output=True, text=True, check=True).stdout.strip()
    assert wf.git_blob_sha1(small) == git_id  # the id the hub reports for non-LFS files
    assert wf.verify_hub_file(small, SimpleNamespace(lfs=None, blob_id=git_id))
    assert not wf.verify_hub_file(small, SimpleNamespace(lfs=None, blob_id="0" * 40))
    big = tmp_path / "model.safetensors"
    big.write_bytes(b"\x00" * 1000)
    sha = hashlib.sha256(b"\x00" * 1000).hexdigest()
    assert wf.verify_hub_file(big, SimpleNamespace(lfs=SimpleNamespace(sha256=sha), blob_id="x"))
    assert not wf.verify_hub_file(big, SimpleNamespace(lfs=SimpleNamespace(sha256="0" * 64), blob_id="x"))


def test_hub_fetch_picks_the_first_alternative_the_repo_has():
    clip = ow.get_weight("clip")
    repo = {n: None for n in ("config.json", "pytorch_model.bin", "vocab.json", "merges.txt", "tokenizer.json")}
    assert wf.hub_files_to_fetch(clip, repo) == ["config.json", "pytorch_model.bin", "vocab.json", "merges.txt", "tokenizer.json"]
    repo["model.safetensors"] = None
    assert wf.hub_files_to_fetch(clip, repo)[1] == "model.safetensors"
    with pytest.raises(wf.WeightsFetchError, match="has none of config.json"):
        wf.hub_files_to_fetch(clip, {"vocab.json": None})


# --------------------------------------------------------------------------- the command


def _cli(args, capsys, monkeypatch):
    """Run `difix-refiner ARGS` in-process; returns (exit code, stdout, stderr)."""
    from difix_refiner.commands.cli import entrypoint

    monkeypatch.setattr(sys, "argv", ["difix-refiner", *args])
    code = 0
    try:
        entrypoint()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    out, err = capsys.readouterr()
    return code, out, err


def test_weights_command_lists_state_and_fails_cleanly_offline(torch_home, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(b"x")
    code, out, _ = _cli(["weights"], capsys, monkeypatch)
    assert code == 0
    for name in ow.weight_names():
        assert f"\n{name}  [" in "\n" + out
    assert "lpips-alex  [present]" in out and "vgg16  [MISSING]" in out and "sd-turbo  [MISSING]" in out
    assert str(checkpoints / "vgg16-397923af.pth") in out
    assert "difix-refiner weights fetch vgg16 clip inception sd-turbo" in out.replace("\n", " ")

    # No network: a proxy on a closed port for URLs, an unreachable hub endpoint, then offline mode.
    closed = f"http://127.0.0.1:{_closed_port()}"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, closed)
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    cases = [
        (["inception"], {}, "cannot fetch inception from https://"),
        (["clip"], {}, "cannot fetch clip (openai/clip-vit-base-patch32): the hub could not be reached"),
        (["sd-turbo", "clip"], {"HF_HUB_OFFLINE": "1"}, "cannot fetch sd-turbo (stabilityai/sd-turbo): offline mode is on"),
    ]
    for names, env, start in cases:
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        code, _, err = _cli(["weights", "fetch", *names], capsys, monkeypatch)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1, (names, err)
        assert lines[0].startswith(f"difix-refiner weights: error: {start}"), err
    assert sorted(p.name for p in checkpoints.iterdir()) == ["alexnet-owt-7be5be79.pth"]
    assert not (tmp_path / "hub" / "models--stabilityai--sd-turbo").exists()

    code, _, err = _cli(["weights", "fetch", "resnet"], capsys, monkeypatch)
    assert code == 1 and "unknown weight(s) resnet; known: lpips-alex" in err


_HUB_CACHE_SCRIPT = r"""
import json, sys
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel
from tiny_clip_tokenizer import save_letters_clip_tokenizer

from difix_refiner.core.optional_weights import get_weight
from difix_refiner.fixer import Fixer
from difix_refiner.fixer.presets import tiny_components
from difix_refiner.fixer.weights import load_base

snapshot = Path(sys.argv[1])
vae, unet, scheduler, _ = tiny_components(0)
vae.save_pretrained(snapshot / "vae")
unet.save_pretrained(snapshot / "unet")
scheduler.save_pretrained(snapshot / "scheduler")
(snapshot / "tokenizer").mkdir()
vocab = save_letters_clip_tokenizer(snapshot / "tokenizer", snapshot / "tokenizer", model_max_length=77)  # vocab.json, merges.txt like SD
dim = unet.config.cross_attention_dim
cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=1,
                     num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
CLIPTextModel(cfg).save_pretrained(snapshot / "text_encoder")
weight = get_weight("sd-turbo")
present = weight.present()
comps = load_base("stabilityai/sd-turbo")  # from the cache only
tokenizer, text_encoder = comps.text_encoder_loader()
fixer = Fixer.from_pretrained("stabilityai/sd-turbo")
(snapshot / "unet" / "diffusion_pytorch_model.safetensors").unlink()
print(json.dumps({"present": present, "source": comps.source, "vocab": len(tokenizer.get_vocab()),
                  "missing_after": weight.missing_files()}))
"""


def test_sd_turbo_counts_as_present_exactly_when_the_fixer_loads_it_from_the_cache(tmp_path):
    """The registry's hub check and the fixer's loader agree on the Hugging Face cache layout."""
    import json

    cache = tmp_path / "hub"
    commit = "a" * 40
    repo = cache / "models--stabilityai--sd-turbo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    tests_dir = Path(__file__).resolve().parents[1]
    env = dict(os.environ, HF_HUB_CACHE=str(cache), PYTHONPATH=os.pathsep.join([str(tests_dir.parent), str(tests_dir)]))
    env.pop("HF_HUB_OFFLINE", None)
    result = subprocess.run(
        [sys.executable, "-c", _HUB_CACHE_SCRIPT, str(snapshot)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["present"] and facts["source"] == "stabilityai/sd-turbo" and facts["vocab"] > 2
    assert facts["missing_after"] == ["unet/diffusion_pytorch_model.safetensors"]


def test_lpips_loads_the_alexnet_file_at_the_registrys_place_without_network(torch_home, monkeypatch):
    """What `weights fetch lpips-alex` enables: torchmetrics' LPIPS finds the file there and downloads nothing."""
    import torch
    import torchvision

    from difix_refiner.core.lpips import LazyLPIPS

    closed = f"http://127.0.0.1:{_closed_port()}"
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, closed)  # any download attempt would fail
    torch.manual_seed(0)
    ow.alexnet_path().parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet().state_dict(), ow.alexnet_path())  # stands in for the real file
    metric = LazyLPIPS()
    assert metric.available
    a = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    value = metric(a, a.flip(-1))
    assert value is not None and torch.isfinite(value) and float(value) > 0
    assert float(metric(a, a)) == 0.0
