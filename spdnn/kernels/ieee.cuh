// Float operations as IEEE 754 defines them, subnormal numbers included, whatever -ftz the
// compiler is given. CuPy builds every kernel with -ftz=true, which flushes subnormal
// inputs and results of C's float operators and of __fadd_rn / __fmul_rn to zero; the CPU
// backend keeps them. Spelled in PTX without .ftz, these compile to the same instructions
// without the flush, so a layer gives the CPU's bits for any weights and features.
//
// Kernels include this file (through rows_fate.cuh or directly); spdnn/backends/cuda.py
// pastes it into their source before NVRTC compiles them, and nvcc finds it beside them.

#pragma once

// name(a, b): the PTX instruction `op` on two floats, as written (no .ftz).
#define IEEE_BINARY(name, op)                                                 \
    __device__ __forceinline__ float name(float a, float b) {                 \
        float result;                                                         \
        asm(op " %0, %1, %2;" : "=f"(result) : "f"(a), "f"(b));               \
        return result;                                                        \
    }

IEEE_BINARY(add_rn, "add.rn.f32")
IEEE_BINARY(mul_rn, "mul.rn.f32")
IEEE_BINARY(max_of, "max.f32")
IEEE_BINARY(min_of, "min.f32")

#undef IEEE_BINARY

// x == 0 (either sign), a subnormal x not counting as zero.
__device__ __forceinline__ bool is_zero(float x) { return (__float_as_uint(x) << 1) == 0u; }
