// What becomes of an active row after a layer, shared by the layer kernels: a row that
// became all zero leaves the active list, a row that became all YMAX retires when every
// later layer keeps it so (`retire`, from the kernels' retire_layer[layer_index], device
// memory so that a launch's arguments do not depend on the depth run), any other row
// stays active for the next layer.
//
// Kernels include this file; spdnn/backends/cuda.py pastes it into their source before
// NVRTC compiles them, and nvcc finds it beside them.

#pragma once

#include "ieee.cuh"
#include "warp.cuh"

// The challenge's rule: bias only where the product is non-zero, then ReLU and clamp
// (computed either way and then chosen: no branch around the PTX of ieee.cuh). A caller
// that knows the bias is below zero may skip the test (ZERO_TEST false): z = +-0 then
// gives max(bias, 0) = +0, what the test gives.
template <bool ZERO_TEST = true>
__device__ __forceinline__ float activate(float z, float bias, float ymax) {
    const float y = min_of(max_of(add_rn(z, bias), 0.0f), ymax);
    if constexpr (!ZERO_TEST) return y;
    return is_zero(z) ? 0.0f : y;
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

// Record the fate of up to 32 rows, one per lane of the calling warp (lanes with `live`
// false hold none): counts[0 .. 3] gain the kept slots, their images, the retired slots,
// their images, and each kept slot goes to list[its place among counts[0]]. Every lane of
// the warp calls it.
__device__ __forceinline__ void account_rows(bool live, int slot, int nonzero, int saturated,
                                             int outputs, int retire, const int* multiplicity,
                                             unsigned char* retired, int* counts, int* list) {
    const int lane = threadIdx.x & 31;
    const Fate fate = row_fate(live, slot, nonzero, saturated, outputs, retire, multiplicity);
    const unsigned kept = __ballot_sync(FULL_MASK, fate.keep);
    const unsigned gone = __ballot_sync(FULL_MASK, fate.retiring);
    const int kept_images = warp_sum(fate.keep ? fate.images : 0);
    const int retired_images = warp_sum(fate.retiring ? fate.images : 0);
    int base = 0;
    if (lane == 0 && kept) {
        base = atomicAdd(&counts[0], __popc(kept));
        atomicAdd(&counts[1], kept_images);
    }
    if (lane == 0 && gone) {
        atomicAdd(&counts[2], __popc(gone));
        atomicAdd(&counts[3], retired_images);
    }
    base = __shfl_sync(FULL_MASK, base, 0);
    if (fate.keep) list[base + __popc(kept & ((1u << lane) - 1))] = slot;
    if (fate.retiring) retired[slot] = 1;
}

// A block's account of the rows it finished, in shared memory. Each block of a kernel
// that uses it owns the active rows [lo, hi) of its layer and stages the slots it keeps
// at staged[lo ...] (account_rows with tally.counts); `publish_rows` then claims their
// place in the next active list with one atomic per block instead of one per row or warp.
struct RowTally {
    int counts[4];    // kept slots, their images, retired slots, their images
    int base;         // where the kept slots go in the next active list
};

__device__ __forceinline__ void block_rows(int n, int& lo, int& hi) {
    lo = (int)((long long)n * blockIdx.x / gridDim.x);
    hi = (int)((long long)n * (blockIdx.x + 1) / gridDim.x);
}

__device__ __forceinline__ void start_tally(RowTally& tally) {
    if (threadIdx.x < 4) tally.counts[threadIdx.x] = 0;
}

// Once every row of the block is tallied: add the block's counts to history_out (active
// slots, their images, retired slots, their images) and copy its kept slots into the
// next active list. Every thread of the block calls it.
__device__ __forceinline__ void publish_rows(RowTally& tally, const int* staged, int* active_out,
                                             int* history_out) {
    __syncthreads();
    const int kept = tally.counts[0];
    if (threadIdx.x == 0) tally.base = kept ? atomicAdd(&history_out[0], kept) : 0;
    if (threadIdx.x > 0 && threadIdx.x < 4 && tally.counts[threadIdx.x])
        atomicAdd(&history_out[threadIdx.x], tally.counts[threadIdx.x]);
    __syncthreads();
    for (int i = threadIdx.x; i < kept; i += blockDim.x) active_out[tally.base + i] = staged[i];
}
