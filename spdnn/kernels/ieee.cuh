// Float operations as IEEE 754 defines them, subnormal numbers included, whatever -ftz the
// compiler is given. CuPy builds every kernel with -ftz=true, which flushes subnormal
// inputs and results of C's float operators and of __fadd_rn / __fmul_rn to zero; the CPU
// backend keeps them. Spelled in PTX without .ftz, these compile to the same instructions
// without the flush, so a layer gives the CPU's bits for any weights and features.
//
// Kernels include this file (through rows_fate.cuh or directly); spdnn/backends/cuda.py
// pastes it into their source before NVRTC compiles them, and nvcc finds it beside them.

#pragma once

__device__ __forceinline__ float add_rn(float a, float b) {
    float sum;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(sum) : "f"(a), "f"(b));
    return sum;
}

__device__ __forceinline__ float mul_rn(float a, float b) {
    float product;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(product) : "f"(a), "f"(b));
    return product;
}

__device__ __forceinline__ float max_of(float a, float b) {
    float larger;
    asm("max.f32 %0, %1, %2;" : "=f"(larger) : "f"(a), "f"(b));
    return larger;
}

__device__ __forceinline__ float min_of(float a, float b) {
    float smaller;
    asm("min.f32 %0, %1, %2;" : "=f"(smaller) : "f"(a), "f"(b));
    return smaller;
}

// x == 0 (either sign), a subnormal x not counting as zero.
__device__ __forceinline__ bool is_zero(float x) { return (__float_as_uint(x) << 1) == 0u; }
