#!/usr/bin/env bash
# The GPU proof in one command, on a machine with an NVIDIA GPU and CuPy, from anywhere:
#   bash scripts/gpu_check.sh                      # GPU tests, then all 12 configurations
#   bash scripts/gpu_check.sh --neurons 1024       # GPU tests, then the given bench.py options
# The official N = 1024 test reads /work/shared/data or, on a machine without it, a copy in
# the git-ignored .device-data/graphchallenge-1024 (carry it to the device machine).
# The results record SPDNN_COMMIT, else `git rev-parse HEAD`: set it where the machine's
# copy of .git may lag the working tree it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -z "${SPDNN_COMMIT:-}" ]; then
    SPDNN_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
    export SPDNN_COMMIT
fi

python3 -c 'import cupy, numba, pyarrow; print("cupy", cupy.__version__, "on",
cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())'
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py
python3 scripts/bench.py "$@"
