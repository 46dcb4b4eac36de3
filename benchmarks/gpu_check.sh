#!/usr/bin/env bash
# The GPU proof of sadc in one run (under 8 minutes on one GPU): distil on the GPU (AMP, fp16
# teacher), `sadc bench --device cuda`, and, where tensorrt imports, fp32/fp16/INT8 engines with
# both NMS choices, each through the export gate (parity + mAP). One markdown table, written to
# $OUT/gpu_check.md when $OUT is set, else printed. See benchmarks/gpu_check.py for the stages.
#
#   benchmarks/gpu_check.sh [--ckpt student.pt] [--work DIR]
#
# Runs the project from this checkout with the machine's own python3 (no install): wheels the
# machine lacks (pydantic, pycocotools, onnxslim, ...) may be carried in .whl/ at the repo root;
# they are installed into a private folder first. SADC_GPU_CHECK_ALLOW_CPU=1 rehearses every
# stage on a CPU at toy sizes (tests); without it a machine without CUDA stops at once.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${SADC_GPU_CHECK_ALLOW_CPU:-0}" != "1" ]; then
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
        echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False, or no torch); run it on a CUDA machine"
        exit 2
    fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=${SADC_GPU_CHECK_SITE:-/tmp/site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" .whl/*.whl \
        || { echo "gpu_check: installing the wheels in .whl/ into $SITE failed"; exit 2; }
    export PYTHONPATH="$SITE:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" benchmarks/gpu_check.py "$@"
