// What becomes of an active row after a layer, shared by the layer kernels: a row that
// became all zero leaves the active list, a row that became all YMAX retires when every
// later layer keeps it so (`retire`, from the kernels' retire_layer[layer_index], device
// memory so that a launch's arguments do not depend on the depth run), any other row
// stays active for the next layer.
//
// Kernels include this file; spdnn/backends/cuda.py pastes it into their source before
// NVRTC compiles them, and nvcc finds it beside them.

#pragma once

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float activate(float z, float bias, float ymax) {
    // the challenge's rule: bias only where the product is non-zero, then ReLU and clamp
    return z == 0.0f ? 0.0f : fminf(fmaxf(__fadd_rn(z, bias), 0.0f), ymax);
}

// The sum of `value` over the 32 lanes of a full warp, in every lane.
__device__ __forceinline__ int warp_sum(int value) {
#if __CUDA_ARCH__ >= 800
    return __reduce_add_sync(FULL_MASK, value);
#else
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(FULL_MASK, value, offset);
    return value;
#endif
}

struct Fate {
    bool keep;        // still active: computed again by the next layer
    bool retiring;    // all YMAX for good: leaves the work, stays a category
    int images;       // the images the row stands for (0 for a dead row)
};

__device__ __forceinline__ Fate row_fate(bool live, int slot, int nonzero, int saturated,
                                         int outputs, int retire, const int* multiplicity) {
    Fate fate;
    const bool alive = live && nonzero > 0;
    fate.retiring = alive && retire && saturated == outputs;
    fate.keep = alive && !fate.retiring;
    fate.images = alive ? multiplicity[slot] : 0;
    return fate;
}

// A block's account of the rows it finished, in shared memory. Each block of a kernel
// that uses it owns the active rows [lo, hi) of its layer and stages the slots it keeps
// at staged[lo ...]; `publish_rows` then claims their place in the next active list with
// one atomic per block instead of one per row or per warp.
struct RowTally {
    int kept, kept_images, retired, retired_images, base;
};

__device__ __forceinline__ void block_rows(int n, int& lo, int& hi) {
    lo = (int)((long long)n * blockIdx.x / gridDim.x);
    hi = (int)((long long)n * (blockIdx.x + 1) / gridDim.x);
}

// Record the fate of up to 32 rows, one per lane of the calling warp (lanes with `live`
// false hold none). Every lane of the warp calls it.
__device__ __forceinline__ void tally_rows(RowTally& tally, bool live, int slot, int nonzero,
                                           int saturated, int outputs, int retire,
                                           const int* multiplicity, unsigned char* retired,
                                           int* staged) {
    const int lane = threadIdx.x & 31;
    const Fate fate = row_fate(live, slot, nonzero, saturated, outputs, retire, multiplicity);
    const unsigned kept = __ballot_sync(FULL_MASK, fate.keep);
    const unsigned gone = __ballot_sync(FULL_MASK, fate.retiring);
    int kept_images = fate.keep ? fate.images : 0, retired_images = fate.retiring ? fate.images : 0;
    for (int offset = 16; offset > 0; offset /= 2) {
        kept_images += __shfl_xor_sync(FULL_MASK, kept_images, offset);
        retired_images += __shfl_xor_sync(FULL_MASK, retired_images, offset);
    }
    int base = 0;
    if (lane == 0 && kept) {
        base = atomicAdd(&tally.kept, __popc(kept));
        atomicAdd(&tally.kept_images, kept_images);
    }
    if (lane == 0 && gone) {
        atomicAdd(&tally.retired, __popc(gone));
        atomicAdd(&tally.retired_images, retired_images);
    }
    base = __shfl_sync(FULL_MASK, base, 0);
    if (fate.keep) staged[base + __popc(kept & ((1u << lane) - 1))] = slot;
    if (fate.retiring) retired[slot] = 1;
}

__device__ __forceinline__ void start_tally(RowTally& tally) {
    if (threadIdx.x == 0) tally.kept = tally.kept_images = tally.retired = tally.retired_images = 0;
}

// Once every row of the block is tallied: add the block's counts to history_out (active
// slots, their images, retired slots, their images) and copy its kept slots into the
// next active list. Every thread of the block calls it.
__device__ __forceinline__ void publish_rows(RowTally& tally, const int* staged, int* active_out,
                                             int* history_out) {
    __syncthreads();
    if (threadIdx.x == 0) {
        tally.base = tally.kept ? atomicAdd(&history_out[0], tally.kept) : 0;
        if (tally.kept_images) atomicAdd(&history_out[1], tally.kept_images);
        if (tally.retired) {
            atomicAdd(&history_out[2], tally.retired);
            atomicAdd(&history_out[3], tally.retired_images);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < tally.kept; i += blockDim.x) active_out[tally.base + i] = staged[i];
}
