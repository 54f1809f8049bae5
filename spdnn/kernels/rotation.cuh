// The two inputs of a rotation layer's outputs (layout.py's `shift`: output e reads inputs
// e and (e + shift) mod inputs, the smaller one first), shared by the kernels that compute
// such layers: pattern.cu reads them from a row in global memory, run.cu from a row in
// shared memory.
//
// Kernels include this file; spdnn/backends/cuda.py pastes it into their source before
// NVRTC compiles them, and nvcc finds it beside them.

#pragma once

// *p, through the read-only cache where GLOBAL.
template <bool GLOBAL, typename T>
__device__ __forceinline__ T read(const T* p) {
    if constexpr (GLOBAL) return __ldg(p);
    else return *p;
}

// The inputs of outputs d .. d + 3 of `row`: x[0][v] the smaller of e and
// (e + shift) mod inputs for output e = d + v, x[1][v] the larger. 16-byte reads when
// shift is a multiple of 4 (no quad then straddles the wrap), 8-byte ones when of 2, else
// one by one; one shift a launch or layer, so every branch is uniform.
template <bool GLOBAL>
__device__ __forceinline__ void gather_rotated(const float* row, int d, int shift, int inputs,
                                               float (*x)[4]) {
    if ((shift & 3) == 0) {
        int b = d + shift;
        b -= b >= inputs ? inputs : 0;
        const float4 lo = read<GLOBAL>(reinterpret_cast<const float4*>(row + min(d, b)));
        const float4 hi = read<GLOBAL>(reinterpret_cast<const float4*>(row + max(d, b)));
        x[0][0] = lo.x, x[0][1] = lo.y, x[0][2] = lo.z, x[0][3] = lo.w;
        x[1][0] = hi.x, x[1][1] = hi.y, x[1][2] = hi.z, x[1][3] = hi.w;
    } else if ((shift & 1) == 0) {
#pragma unroll
        for (int h = 0; h < 4; h += 2) {
            const int e = d + h;
            int b = e + shift;
            b -= b >= inputs ? inputs : 0;
            const float2 lo = read<GLOBAL>(reinterpret_cast<const float2*>(row + min(e, b)));
            const float2 hi = read<GLOBAL>(reinterpret_cast<const float2*>(row + max(e, b)));
            x[0][h] = lo.x, x[0][h + 1] = lo.y, x[1][h] = hi.x, x[1][h + 1] = hi.y;
        }
    } else {
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int e = d + v;
            int b = e + shift;
            b -= b >= inputs ? inputs : 0;
            x[0][v] = read<GLOBAL>(row + min(e, b));
            x[1][v] = read<GLOBAL>(row + max(e, b));
        }
    }
}
