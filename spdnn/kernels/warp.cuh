// Helpers shared by the kernels: sums and scans over the 32 lanes of a full warp, and which
// block of a grid finishes last.
//
// Kernels include this file; spdnn/backends/cuda.py pastes it into their source (once)
// before NVRTC compiles them, and nvcc finds it beside them.

#pragma once

#define FULL_MASK 0xffffffffu

// The sum of `value` over the 32 lanes of a full warp, in every lane.
__device__ __forceinline__ int warp_sum(int value) {
#if __CUDA_ARCH__ >= 800
    return __reduce_add_sync(FULL_MASK, value);
#else
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(FULL_MASK, value, offset);
    return value;
#endif
}

// The sum of `value` over lanes 0 .. this lane of a full warp (an inclusive scan).
__device__ __forceinline__ int warp_inclusive_sum(int value) {
    const int lane = threadIdx.x & 31;
    for (int offset = 1; offset < 32; offset *= 2) {
        const int before = __shfl_up_sync(FULL_MASK, value, offset);
        if (lane >= offset) value += before;
    }
    return value;
}

// Whether this block is the last of the grid to get here; every thread of the block calls
// it. The other blocks' writes before their call are visible to the last block afterwards.
// done_blocks counts the blocks: the last block sets it back to zero when it is done.
__device__ __forceinline__ bool last_block(int* done_blocks) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(done_blocks, 1) == gridDim.x - 1;
    __syncthreads();
    if (last) __threadfence();
    return last;
}
