"""`ns-viewer --load-config` on a finished difix-refiner run serves its web client and scene on localhost."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 300.0
"""Loading nerfstudio, the run and its images takes about a minute on a busy 2-core machine."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read()


def _wait_for_page(url: str, process: subprocess.Popen, log: Path) -> bytes:
    end = time.time() + START_TIMEOUT_S
    while time.time() < end:
        if process.poll() is not None:
            raise AssertionError(f"ns-viewer exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return _get(url)
        except OSError:
            time.sleep(1.0)
    raise AssertionError(f"ns-viewer did not serve {url} within {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _scene_messages(port: int, needle: bytes, timeout_s: float = 60.0) -> bytes:
    """Bytes the viewer's websocket sends a new client until ``needle`` appears (or the timeout)."""
    import websocket  # websocket-client, a nerfstudio dependency

    ws = websocket.create_connection(f"ws://127.0.0.1:{port}", timeout=10)
    received = b""
    end = time.time() + timeout_s
    try:
        while needle not in received and time.time() < end:
            try:
                frame = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            received += frame if isinstance(frame, bytes) else frame.encode()
    finally:
        ws.close()
    return received


def test_viewer_serves_a_finished_run(tiny_run, tmp_path):
    port = _free_port()
    log = tmp_path / "viewer.log"
    command = [
        str(Path(sys.executable).parent / "ns-viewer"), "--load-config", str(tiny_run),
        "--viewer.websocket-host", "127.0.0.1", "--viewer.websocket-port", str(port),
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        page = _wait_for_page(f"http://127.0.0.1:{port}/", process, log)
        # viser's web client comes from the installed package, not from the internet.
        assert b"<title>Viser</title>" in page and b'<div id="root">' in page
        script = page.split(b'src="', 2)[2].split(b'"', 1)[0].decode()  # the client bundle (/assets/index-*.js)
        assert script.startswith("/assets/") and len(_get(f"http://127.0.0.1:{port}{script}")) > 1_000_000
        # A connecting client is sent the scene: the training cameras among it.
        received = _scene_messages(port, b"/cameras/camera_00000")
        assert b"/cameras/camera_00000" in received, f"{len(received)} bytes, no training camera"
        assert f"http://127.0.0.1:{port}" in log.read_text()  # only the loopback interface, as asked
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode is not None


def test_viewer_listens_on_all_interfaces_by_default():
    """What the README warns about: nerfstudio's viewer binds 0.0.0.0 unless --viewer.websocket-host is given."""
    from nerfstudio.configs.base_config import ViewerConfig

    assert ViewerConfig().websocket_host == "0.0.0.0"
