#!/usr/bin/env bash
# Download, on a machine with network, the wheels benchmarks/gpu_check.py needs on a bare GPU machine
# that has torch, nvcc, accelerate, peft, transformers, numpy, scipy, matplotlib, opencv, scikit-image,
# tensorboard, rich, jaxtyping, pytest (a CUDA image such as the one described in benchmarks/README.md)
# but not nerfstudio, gsplat, diffusers or tyro, and no network.
#
#   bash benchmarks/gpu_wheels.sh                 # Python 3.12, manylinux x86-64, into .whl/
#   PYTHON_VERSION=3.11 DEST=/tmp/whl bash benchmarks/gpu_wheels.sh
#
# Only what the check imports is fetched (with --no-deps): nerfstudio's train/eval entry points import
# viser, nerfacc, pathos, rawpy, fpsample, ... at import time, but not open3d, pymeshlab, wandb, comet or
# the viewer's front end; those are left out. The list was found by importing the check's entry points
# and running `gpu_check.py --dry-run` with only the GPU image's packages on the path (benchmarks/README.md).
# gpu_check.py installs the folder's wheels for whatever is missing (pip install --no-index --no-deps
# --target) and puts them on PYTHONPATH for its commands.
set -euo pipefail

PYTHON=${PYTHON:-python3}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
DEST=${DEST:-"$(cd "$(dirname "$0")/.." && pwd)/.whl"}
LIMIT_MIB=${LIMIT_MIB:-64}

# name==version  # what imports it
PACKAGES=(
  "nerfstudio==1.1.5"      # ns-train / ns-eval; the plugin is written against 1.1.5
  "gsplat==1.4.0"          # nerfstudio 1.1.5's pin; pure Python, CUDA kernels compiled at first use
  "diffusers==0.42.1"      # the fixer's UNet/VAE/scheduler and the img2img baseline
  "tyro==1.0.17"           # every command line (nerfstudio's and ours)
  "docstring-parser==0.18.0"  # tyro
  "typeguard==4.6.1"       # tyro
  "viser==0.2.7"           # nerfstudio.engine.trainer imports its viewer
  "msgspec==0.23.0"        # viser
  "websockets==17.4"       # viser
  "nerfacc==0.5.2"         # nerfstudio's model components (import only)
  "splines==0.3.0"         # nerfstudio's camera paths
  "pytorch-msssim==1.0.0"  # nerfstudio's splatfacto and our model: SSIM
  "tensorly==0.10.0"       # nerfstudio's field components
  "pathos==0.3.5"          # nerfstudio's data utilities
  "ppft==1.7.8"            # pathos
  "dill==0.4.1"            # pathos
  "rawpy==0.28.0"          # nerfstudio.process_data (imported by the dataparsers)
  "fpsample==0.3.3"        # nerfstudio's full-image datamanager (1.x has no manylinux wheel)
  "pyquaternion==0.9.9"    # nerfstudio's nuscenes dataparser (imported by the method registry)
  "appdirs==1.4.4"         # nerfstudio.process_data.colmap_utils
)

PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${tag}_x86_64")
done

mkdir -p "$DEST"
names=("${PACKAGES[@]}")
echo "downloading ${#names[@]} wheels for Python $PYTHON_VERSION (manylinux x86-64) into $DEST"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version "$PYTHON_VERSION" --implementation cp "${PLATFORMS[@]}" -d "$DEST" "${names[@]}"

# One version per distribution: two would stop the whole install on the GPU machine.
dupes=$(ls "$DEST"/*.whl | xargs -n1 basename | cut -d- -f1 | tr 'A-Z_.' 'a-z--' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "error: $DEST holds several versions of: $dupes (delete the old ones)" >&2
  exit 1
fi
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, $((total / 1024 / 1024)) MiB ($total bytes) in $DEST"
if [ "$total" -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
  echo "error: the wheel set is over ${LIMIT_MIB} MiB" >&2
  exit 1
fi
