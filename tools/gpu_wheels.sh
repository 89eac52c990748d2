#!/usr/bin/env bash
# Download the wheels tools/gpu_check.py installs on the GPU machine into .whl/ (or the folder given).
#
# That machine's python3 (3.12, x86-64) has torch, torchdiffeq, safetensors, click, opencv and scikit-image but
# not construct, zstandard, lpips, av or constriction (format 1.3's arith coder), and it has no network: the
# wheels travel with the code (the device tool's `carry: [".whl"]`; .gitignore keeps them out of git) and
# gpu_check installs them with
# `pip install --no-index --find-links .whl`. About 40 MB, most of it av (FFmpeg inside): the device tool carries
# at most 64 MiB with the working tree, so carry nothing else large beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-.whl}"
python="${PYTHON:-python3}"
# the versions pyproject.toml allows; one version of each (two stop the install)
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dest" "construct>=2.10,<2.11" "zstandard>=0.22" "lpips>=0.1.4" "av>=12" \
    "constriction>=0.5.0,<0.6"
ls -l "$dest"
