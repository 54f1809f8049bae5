# Environment of every spdnn SLURM job: sourced by the sbatch templates beside it, on the
# batch node, before `srun` copies it to every task. Edit this file for your site.

# 1. Software: a module system, a virtual environment, or both.
# module load cuda/12.4 openmpi/4.1      # the MPI that mpi4py was built against
if [ -n "${SPDNN_VENV:-}" ]; then
    # shellcheck disable=SC1091
    source "$SPDNN_VENV/bin/activate"
fi

# 2. Compiled-kernel caches on a shared file system: CuPy compiles spdnn's .cu kernels once
#    and every later task, node and job reuses them (writes are atomic, so tasks may race).
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-$HOME/.cache/spdnn/cupy}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$HOME/.cache/spdnn/numba}"   # CPU backend
mkdir -p "$CUPY_CACHE_DIR" "$NUMBA_CACHE_DIR"

# 3. How srun talks to MPI: pmix (Open MPI 4/5, recent MPICH) or pmi2 (MPICH, Intel MPI).
#    `srun --mpi=list` shows what this cluster offers.
export SPDNN_SRUN_MPI="${SPDNN_SRUN_MPI:-pmix}"

# 4. Where results go (the sweep writes one JSON per configuration and one summary).
export SPDNN_RESULTS="${SPDNN_RESULTS:-$SLURM_SUBMIT_DIR/bench/results}"
mkdir -p "$SPDNN_RESULTS"
