#!/usr/bin/env bash
# grpokit's GPU check in one call (docs/gpu.md): the gpu-marked tests, grpokit vs TRL on the same card, and the
# largest Qwen2 shape that fits a GRPO step. Results: $OUT/results.json and $OUT/summary.md (default gpu-check/).
#
#   scripts/gpu-check.sh                      # on the GPU machine, from a checkout of this repository
#   scripts/gpu-check.sh --out /tmp/gc        # any further options go to benchmarks/gpu_check.py
#   scripts/gpu-check.sh --download-wheels    # beforehand, where there is network: fills wheels/
#
# The GPU machine needs a Python with torch (CUDA), transformers, accelerate and peft. What else grpokit, the
# tests and TRL need (pydantic, pyyaml, tqdm, psutil, pytest, trl and its dependencies) is installed from the
# wheels directory ($GPU_CHECK_WHEELS, default wheels/) without network, when that directory exists. grpokit
# itself runs from src/ (PYTHONPATH): nothing is built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/wheels}

if [[ "${1:-}" == "--download-wheels" ]]; then
  # Set GPU_CHECK_PYTHON_VERSION (e.g. 3.11) and GPU_CHECK_PLATFORM (e.g. manylinux_2_28_x86_64) when this
  # machine's Python or platform is not the GPU machine's.
  args=(--download-wheels "$WHEELS")
  [[ -n "${GPU_CHECK_PYTHON_VERSION:-}" ]] && args+=(--wheel-python "$GPU_CHECK_PYTHON_VERSION")
  [[ -n "${GPU_CHECK_PLATFORM:-}" ]] && args+=(--wheel-platform "$GPU_CHECK_PLATFORM")
  exec "$PYTHON" benchmarks/gpu_check.py "${args[@]}"
fi

if [[ -d "$WHEELS" ]]; then
  # Installed ones are kept; only what is missing comes from the wheels. TRL is optional: without it the
  # results say "trl not installed".
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "pydantic>=2.6" "pyyaml>=6" "tqdm>=4.66" \
    "psutil>=5.9" "pytest>=8"
  "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" "trl>=1.0" \
    || echo "gpu-check: trl could not be installed from $WHEELS; the comparison runs grpokit alone" >&2
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The check keeps itself within --budget-s (450 s); the timeout is the backstop of the 8-minute promise.
exec timeout --signal=TERM 480 "$PYTHON" benchmarks/gpu_check.py --device cuda "$@"
