"""Downloading the optional weights of :mod:`difix_refiner.core.optional_weights`, the only code that does.

* 'file' weights are streamed to a temporary sibling of their final path, checked against their
  published SHA-256 (the full hash when published, else the hash prefix in the torch.hub-style file
  name) and only then renamed into place, so the final path never holds a partial or wrong file.
* 'hub' weights are fetched into the Hugging Face cache with ``huggingface_hub`` (which writes each
  file under a temporary name and renames it) at the current ``main`` revision, and every file is then
  checked against the checksum the hub publishes for it (SHA-256 for LFS files, the git blob SHA-1
  for small ones); a file that does not match is removed again.

Every failure is a :class:`WeightsFetchError` whose message is one sentence saying what failed and
what to do; offline mode (``HF_HUB_OFFLINE=1``) refuses before any connection is tried.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from difix_refiner.core.errors import InputError
from difix_refiner.core.optional_weights import OptionalWeight, file_sha256, hub_offline

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 30.0


class WeightsFetchError(InputError):
    """A weight could not be fetched; the message is one sentence naming what failed and what to do."""


def offline_reason() -> Optional[str]:
    """Why downloads are refused (an offline flag is set), or None."""
    if hub_offline():
        flags = [f for f in ("HF_HUB_OFFLINE", "DIFFUSERS_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(f)]
        return f"offline mode is on ({', '.join(f'{f}={os.environ[f]}' for f in flags)})"
    return None


def git_blob_sha1(path: Path) -> str:
    """The git blob id of a file (SHA-1 of ``b"blob <size>\\0" + contents``), as the hub reports for small files."""
    digest = hashlib.sha1()
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_matches(weight: OptionalWeight, sha256: str) -> bool:
    """Whether a SHA-256 is the published one of a 'file' weight (full hash, else the name's prefix)."""
    if weight.sha256:
        return sha256 == weight.sha256
    if weight.sha256_prefix:
        return sha256.startswith(weight.sha256_prefix)
    raise ValueError(f"{weight.name} has no published checksum")


def _network_reason(err: BaseException) -> str:
    """A short reason for a failed connection (no traceback)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"the server answered HTTP {err.code}"
    if isinstance(err, urllib.error.URLError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, (socket.timeout, TimeoutError)):
        return f"no answer within {TIMEOUT_S:.0f} s"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:160]


def fetch_file(weight: OptionalWeight, dest: Optional[Path] = None, progress: bool = True) -> Path:
    """Download a 'file' weight to ``dest`` (default: where the code looks), checked and atomic.

    A file already there with the right checksum is kept; one with a wrong checksum is replaced.
    """
    from tqdm import tqdm

    from difix_refiner.core.atomic import atomic_path

    assert weight.kind == "file" and weight.url is not None
    target = Path(dest) if dest is not None else weight.location()
    assert target is not None
    if target.is_file() and checksum_matches(weight, file_sha256(target)):
        return target
    reason = offline_reason()
    if reason is not None:
        raise WeightsFetchError(
            f"cannot fetch {weight.name}: {reason}, so nothing is downloaded; unset it on a machine with network "
            f"or copy the file from {weight.url} to {target}"
        )
    digest = hashlib.sha256()
    try:
        with atomic_path(target) as tmp:
            # A fresh opener reads the proxy settings (https_proxy, ...) of the environment now.
            opener = urllib.request.build_opener()
            with opener.open(weight.url, timeout=TIMEOUT_S) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=weight.name, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                        out.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            if not checksum_matches(weight, digest.hexdigest()):
                tmp.unlink()  # publishes nothing
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise WeightsFetchError(
            f"cannot fetch {weight.name} from {weight.url} ({_network_reason(err)}); check the network "
            f"connection, or copy the file there by other means to {target}"
        ) from None
    if not target.is_file() or not checksum_matches(weight, file_sha256(target)):
        expected = weight.sha256 or f"{weight.sha256_prefix}..."
        raise WeightsFetchError(
            f"the download of {weight.name} from {weight.url} has SHA-256 {digest.hexdigest()}, not the published "
            f"{expected}, so it was discarded; try again, and if it persists the file at that URL has changed"
        )
    return target


# --------------------------------------------------------------------------- hub


def _hub_error(weight: OptionalWeight, err: BaseException) -> WeightsFetchError:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
    )

    page = f"https://huggingface.co/{weight.repo_id}"
    if isinstance(err, GatedRepoError):
        why = f"the hub requires you to accept the model's terms at {page} and log in (`hf auth login`)"
    elif isinstance(err, RepositoryNotFoundError):
        why = f"the hub does not know {weight.repo_id} (or needs a login: `hf auth login`)"
    elif isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        why = f"the hub answered HTTP {err.response.status_code}; try again later"
    else:
        why = f"the hub could not be reached ({_network_reason(err)}); check the network connection"
    return WeightsFetchError(f"cannot fetch {weight.name} ({weight.repo_id}): {why}")


def _repo_files(weight: OptionalWeight) -> Dict[str, Any]:
    """``{path: sibling}`` of the hub model at ``main``, with the hub's checksums (one API call)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(weight.repo_id, revision="main", files_metadata=True)
    return {s.rfilename: s for s in (info.siblings or [])}


def hub_files_to_fetch(weight: OptionalWeight, available: Dict[str, Any]) -> List[str]:
    """The repo files to download: the first available alternative of each required group, then the optional ones."""
    chosen = []
    for group in weight.hub_files:
        have = [f for f in group if f in available]
        if not have:
            raise WeightsFetchError(
                f"cannot fetch {weight.name}: the hub model {weight.repo_id} has none of {', '.join(group)}, "
                "so this version of difix-refiner cannot use it"
            )
        chosen.append(have[0])
    return chosen + [f for f in weight.hub_optional if f in available]


def verify_hub_file(path: Path, sibling: Any) -> bool:
    """Whether a downloaded file matches the hub's checksum (LFS: SHA-256; otherwise the git blob id)."""
    lfs = getattr(sibling, "lfs", None)
    sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
    if sha256:
        return file_sha256(path) == sha256
    blob_id = getattr(sibling, "blob_id", None)
    return blob_id is None or git_blob_sha1(path) == blob_id


def _discard(path: Path) -> None:
    """Remove a cached hub file: the blob it links to, then the snapshot entry."""
    real = path.resolve()
    for p in (real, path):
        if p.is_symlink() or p.exists():
            p.unlink()


def fetch_hub(weight: OptionalWeight) -> Path:
    """Download a 'hub' weight's files into the Hugging Face cache and check each one; returns the snapshot folder."""
    from huggingface_hub import hf_hub_download

    assert weight.kind == "hub" and weight.repo_id is not None
    reason = offline_reason()
    if reason is not None:
        raise WeightsFetchError(
            f"cannot fetch {weight.name} ({weight.repo_id}): {reason}, so nothing is downloaded; unset it on a "
            "machine with network"
        )
    try:
        available = _repo_files(weight)
    except Exception as err:  # httpx, hub and OS errors all mean "no usable answer from the hub"
        raise _hub_error(weight, err) from None
    snapshot: Optional[Path] = None
    for name in hub_files_to_fetch(weight, available):
        try:
            path = Path(hf_hub_download(weight.repo_id, name, revision="main"))
        except Exception as err:
            raise _hub_error(weight, err) from None
        if not verify_hub_file(path, available[name]):
            _discard(path)
            raise WeightsFetchError(
                f"the download of {name} of {weight.repo_id} does not match the checksum the hub publishes, "
                "so it was removed; run the fetch again"
            )
        snapshot = Path(str(path)[: -len(name)]) if str(path).endswith(name) else path.parent
    assert snapshot is not None
    return snapshot


def fetch(weight: OptionalWeight, progress: bool = True) -> Optional[Path]:
    """Put ``weight`` where the code looks for it; returns its path (None for package-shipped weights)."""
    if weight.kind == "file":
        return fetch_file(weight, progress=progress)
    if weight.kind == "hub":
        return fetch_hub(weight)
    place = weight.location()
    if place is None or not place.is_file():
        raise WeightsFetchError(
            f"{weight.name} ships with the lpips pip package, which is not installed here; reinstall "
            "difix-refiner (pip install -e .) to get it"
        )
    return place
