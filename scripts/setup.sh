#!/usr/bin/env bash
# Creates .venv and installs the project with everything the demo and the tests need.
# torch is installed first, pinned, so that pip takes the CPU wheel where one lies on disk and never
# resolves an unpinned `torch` to a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION="${GNI_TORCH_VERSION:-2.13.0}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.gni-installed
want="$(cat pyproject.toml sdk/pyproject.toml | sha256sum | cut -c1-16)-torch${TORCH_VERSION}"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # An exact pin: on a CPU machine with the CPU wheel on disk this takes that wheel.
  .venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
fi
.venv/bin/python -m pip install -q -e ".[service,dev]"
.venv/bin/python -m pip install -q -e sdk/
echo "$want" > "$stamp"
