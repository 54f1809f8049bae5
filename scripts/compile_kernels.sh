#!/usr/bin/env bash
# Compile every CUDA kernel file with nvcc for the GPUs spdnn supports (no GPU needed):
#   bash scripts/compile_kernels.sh
# At run time CuPy compiles the same files through NVRTC with -D options choosing a
# variant; the variants below cover each option's values at least once, and each file is
# also built as NVRTC gets it, headers pasted in.
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-nvcc}"
ARCHS=(80 90)
LAYER_VARIANTS=(
    ""
    "-DROWS=32 -DCONST_WEIGHT=1"
    "-DROWS=1 -DTHREADS=1024 -DSPARSE_INPUT=1 -DINDEX_BYTES=4 -DFEATURE_INDEX_BYTES=2"
    "-DROWS=2 -DSPARSE_INPUT=1 -DCONST_WEIGHT=1"
    "-DROWS=16 -DINDEX_BYTES=4"
)
PATTERN_VARIANTS=(
    ""
    "-DPATTERN=\"01010101010101010101010101010101\" -DUNIQUE=2"
    "-DPATTERN=\"0123210\" -DUNIQUE=4 -DTHREADS=256"
    "-DVEC=4"
    "-DPATTERN=\"01010101010101010101010101010101\" -DUNIQUE=2 -DVEC=4 -DTHREADS=256"
    "-DPATTERN=\"01010101010101010101010101010101\" -DUNIQUE=2 -DVEC=4 -DSHIFTED=1"
)
MARCH_VARIANTS=(
    ""
    "-DROW_THREADS=256"
    "-DROW_THREADS=64 -DTHREADS=128"
    "-DFIXED_WIDTH=32 -DFIXED_INDEX_BYTES=2 -DFIXED_SHIFT=5 -DCONSTANT_WEIGHTS=1 -DCHUNK_MAJOR=1"
    "-DFIXED_WIDTH=16 -DFIXED_INDEX_BYTES=4 -DFIXED_SHIFT=0 -DCHUNK_MAJOR=1"
    "-DFIXED_WIDTH=32 -DFIXED_INDEX_BYTES=2 -DFIXED_SHIFT=0 -DCONSTANT_WEIGHTS=1 -DCHUNK_MAJOR=1 -DCOPY_STRIDE=256 -DROW_THREADS=128"
)
RUN_VARIANTS=(
    ""
    "-DROW_THREADS=4 -DWIDEST=16 -DPATTERN=\"01010101\""
    "-DROW_THREADS=16 -DWIDEST=64 -DPATTERN=\"01010101010101010101010101010101\" -DNEGATIVE_BIAS=1"
    "-DROW_THREADS=32 -DWIDEST=128"
    "-DROW_THREADS=256 -DWIDEST=1024 -DNEGATIVE_BIAS=1"
    "-DROW_THREADS=512 -DTHREADS=512 -DWIDEST=4096"
)
FIRST_VARIANTS=(
    ""
    "-DROW_WARPS=16 -DFANOUT=4 -DFEATURE_INDEX_BYTES=2"
    "-DROW_WARPS=4 -DFEATURE_INDEX_BYTES=2"
    "-DCIRCULANT=1 -DOUTPUTS=64 -DFEATURE_INDEX_BYTES=2 -DVEC=4"
    "-DROW_WARPS=16 -DCIRCULANT=1 -DOUTPUTS=4096"
    "-DROW_WARPS=2 -DVEC=4 -DFEATURE_INDEX_BYTES=2"
    "-DCIRCULANT=1 -DOUTPUTS=64 -DVEC=4 -DBITS=1 -DFEATURE_INDEX_BYTES=2"
    "-DCIRCULANT=1 -DOUTPUTS=64 -DVEC=4 -DBITS=1 -DROWS_AT_ONCE=2"
    "-DCIRCULANT=1 -DOUTPUTS=4 -DVEC=4 -DBITS=1 -DMASK_BYTES=4 -DROWS_AT_ONCE=32 -DSHIFT0=3"
    "-DROW_WARPS=4 -DCIRCULANT=1 -DOUTPUTS=4100 -DVEC=4 -DBITS=1 -DMASK_BYTES=4 -DFANOUT=4 -DSHIFT0=0 -DSHIFT1=1 -DSHIFT2=2 -DSHIFT3=3"
    "-DCIRCULANT=1 -DOUTPUTS=100 -DVEC=4 -DBITS=1 -DMASK_BYTES=1 -DFANOUT=4 -DSHIFT0=0 -DSHIFT1=1 -DSHIFT2=99 -DSHIFT3=98"
    "-DROW_WARPS=16 -DCIRCULANT=1 -DOUTPUTS=4096 -DVEC=4 -DBITS=1 -DSHIFT0=4095"
)

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
count=0
for source in spdnn/kernels/*.cu; do
    variants=("")
    case "$(basename "$source")" in
        layer.cu) variants=("${LAYER_VARIANTS[@]}") ;;
        pattern.cu) variants=("${PATTERN_VARIANTS[@]}") ;;
        first.cu) variants=("${FIRST_VARIANTS[@]}") ;;
        march.cu) variants=("${MARCH_VARIANTS[@]}") ;;
        run.cu) variants=("${RUN_VARIANTS[@]}") ;;
    esac
    for arch in "${ARCHS[@]}"; do
        for defines in "${variants[@]}"; do
            # shellcheck disable=SC2086 - the defines are separate words on purpose
            "$NVCC" -c -arch="sm_$arch" -Werror all-warnings $defines "$source" -o "$out/k.o"
            count=$((count + 1))
        done
    done
done
# the text NVRTC gets at run time: each file with its headers pasted in (cuda.kernel_source)
for source in spdnn/kernels/*.cu; do
    PYTHONPATH=$PWD python3 -c 'import sys; from spdnn.backends.cuda import kernel_source
print(kernel_source(sys.argv[1]))' "$(basename "$source")" > "$out/pasted.cu"
    "$NVCC" -c -arch=sm_90 -Werror all-warnings "$out/pasted.cu" -o "$out/k.o"
    count=$((count + 1))
done
echo "compile_kernels: $count builds of $(ls spdnn/kernels/*.cu | wc -l) files OK (sm_${ARCHS[*]})"
