#!/usr/bin/env bash
# Download the wheels that benchmarks/gpu_check.sh installs on the GPU machine. Its image has
# torch, tokenizers, safetensors, huggingface-hub, numpy, psutil and pytest, but not pydantic or
# tomli-w, and an older transformers (5.17) whose MoeCausalLMOutputWithPast lacks the `cache`
# field the model fills (/work/.library/device/KINDS.md); it cannot reach a package index. It
# runs CPython 3.12 on x86-64 Linux; the versions pinned here are the ones this environment uses.
#
#   bash benchmarks/fetch_wheels.sh [DEST]      # DEST defaults to .whl (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${1:-.whl}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
# pydantic and tomli-w for the settings, Textual and its plots for the dashboard's CUDA test,
# pytest-asyncio for the Pilot tests; transformers at this environment's version.
NAMES="pydantic pydantic-core annotated-types typing-inspection typing-extensions tomli-w \
transformers textual textual-plotext plotext mdit-py-plugins platformdirs pytest-asyncio"

pins=$($PY -c "
from importlib.metadata import version
print(' '.join(f'{n}=={version(n)}' for n in '$NAMES'.split()))")
mkdir -p "$DEST"
for name in $NAMES; do  # one version of each, or the install on the device stops
    rm -f "$DEST/${name//-/_}"-*.whl
done
$PY -m pip download --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DEST" $pins
ls -l "$DEST"
