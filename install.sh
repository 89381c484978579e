#!/usr/bin/env bash
# Set up difix-refiner in ./.venv: the Debian packages nerfstudio needs, then the package with its test tools.
# Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")"

# System packages: nerfstudio imports open3d (ns-export), which needs libusb-1.0 at import time, and
# ns-render refuses to start without an ffmpeg executable.
missing=()
ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0" || missing+=(libusb-1.0-0)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "install.sh: please install Debian's ${missing[*]} (sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The registry's default torch wheel is a CUDA build: it runs on CPU-only machines too.
.venv/bin/python -m pip install -q -e ".[dev]"
echo "install.sh: ready. Activate with: source .venv/bin/activate"
