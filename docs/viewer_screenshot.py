"""Screenshot a running nerfstudio viewer in headless Chromium (how docs/images/viewer_*.jpg were made).

    python docs/viewer_screenshot.py --url http://127.0.0.1:7007 --output docs/images/viewer_live.jpg

Starts Debian's ``chromium`` headless with software WebGL, opens the viewer, waits for it to draw,
optionally orbits/zooms the camera with the mouse (``--drag DX DY``, ``--zoom STEPS``), waits for the
training process to send its render, and saves a screenshot through the DevTools protocol. It also
prints what the page reports (title, WebGL, the viser connection) so a failure says why.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",  # software WebGL (Chromium no longer falls back to it by itself)
    "--use-angle=swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client, installed with nerfstudio

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def drag(self, x: float, y: float, dx: float, dy: float, steps: int = 20) -> None:
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        for i in range(1, steps + 1):
            self.call(
                "Input.dispatchMouseEvent", type="mouseMoved", x=x + dx * i / steps, y=y + dy * i / steps, button="left"
            )
            time.sleep(0.03)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x + dx, y=y + dy, button="left", clickCount=1)

    def wheel(self, x: float, y: float, delta_y: float) -> None:
        self.call("Input.dispatchMouseEvent", type="mouseWheel", x=x, y=y, deltaX=0, deltaY=delta_y)


def page_socket(port: int, deadline_s: float = 60.0) -> str:
    """The DevTools websocket of Chromium's first page."""
    end = time.time() + deadline_s
    while time.time() < end:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [p for p in json.loads(r.read()) if p.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("Chromium's DevTools endpoint did not come up")


def screenshot(
    url: str,
    output: Path,
    width: int,
    height: int,
    wait_s: float,
    drags: List[List[float]],
    zoom: int,
    quality: int,
    port: int = 9333,
    chromium: Optional[str] = None,
) -> Dict[str, Any]:
    """Open ``url`` in headless Chromium, interact, save a JPEG/PNG screenshot; returns page facts."""
    from PIL import Image

    binary = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium not found (Debian: apt-get install -y chromium)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    command = [binary, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
               f"--window-size={width},{height}", "about:blank"]  # fmt: skip
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tools = DevTools(page_socket(port))
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        tools.call("Page.navigate", url=url)
        time.sleep(wait_s)
        cx, cy = width * 0.6, height * 0.5
        for dx, dy in drags:
            tools.drag(cx, cy, dx, dy)
            time.sleep(1.0)
        for _ in range(abs(zoom)):
            tools.wheel(cx, cy, -120 if zoom > 0 else 120)
            time.sleep(0.2)
        time.sleep(wait_s)  # let the training process render the new view and send it
        facts = {
            "title": tools.evaluate("document.title"),
            "canvases": tools.evaluate("document.querySelectorAll('canvas').length"),
            "webgl": tools.evaluate(
                "(() => { const c = document.createElement('canvas'); const g = c.getContext('webgl2') || "
                "c.getContext('webgl'); return g ? g.getParameter(g.RENDERER) : null; })()"
            ),
            "text": (tools.evaluate("document.body.innerText") or "")[:400],
        }
        shot = base64.b64decode(tools.call("Page.captureScreenshot", format="png")["data"])
        image = Image.open(io.BytesIO(shot)).convert("RGB")
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() in (".jpg", ".jpeg"):
            image.save(output, quality=quality, optimize=True)
        else:
            image.save(output, optimize=True)
        facts["bytes"] = output.stat().st_size
        return facts
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=20)
        except subprocess.TimeoutExpired:
            browser.kill()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7007")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--wait-s", type=float, default=20.0, help="seconds to wait after loading and after moving")
    parser.add_argument("--drag", type=float, nargs=2, action="append", default=[], metavar=("DX", "DY"))
    parser.add_argument("--zoom", type=int, default=0, help="mouse-wheel steps (positive zooms in)")
    parser.add_argument("--quality", type=int, default=80)
    args = parser.parse_args()
    facts = screenshot(args.url, args.output, args.width, args.height, args.wait_s, args.drag, args.zoom, args.quality)
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
