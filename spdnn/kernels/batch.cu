// A batch's bookkeeping at its start and at its end, one launch each, so that neither
// costs a string of small host-launched array operations.
//
// Built at run time by CuPy (NVRTC); compiles standalone with `nvcc -c`.

#include "warp.cuh"

// Make slots 0 .. count-1 the batch's fresh active rows: slot s holds image s once, no row
// retired, and the history says `count` rows (and images) go into layer 1.
extern "C" __global__ void start_batch(int count, int* __restrict__ history, int history_size,
                                       int* __restrict__ active, int* __restrict__ which,
                                       int* __restrict__ multiplicity,
                                       unsigned char* __restrict__ retired) {
    const int stride = gridDim.x * blockDim.x;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < max(count, history_size); i += stride) {
        if (i < history_size) history[i] = i < 2 ? count : 0;
        if (i < count) {
            active[i] = i;
            which[i] = i;
            multiplicity[i] = 1;
            retired[i] = 0;
        }
    }
}

// Mark the slots still active after the last layer run (history_out[0] of them, listed in
// active) in `alive`, which holds a copy of the retired flags: then a slot is alive when
// its row is a category.
extern "C" __global__ void mark_active(const int* __restrict__ history_out,
                                       const int* __restrict__ active,
                                       unsigned char* __restrict__ alive) {
    const int n = history_out[0];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        alive[active[i]] = 1;
}

#ifndef LIST_THREADS
#define LIST_THREADS 1024     // at most 1024: warp 0 scans one total per warp
#endif
#define LIST_WARPS (LIST_THREADS / 32)
#define LIST_STEPS 64         // 32-image steps a warp takes per round (their ballots in shared memory)
#ifndef LIST_UNROLL
#define LIST_UNROLL 8         // steps whose loads are in flight together
#endif

// The batch's categories in ascending order: list[1 ...] gets each image i < images whose
// row (slot which[i]) is alive, list[0] their number, written last. `list` may be host
// memory mapped for the device: the host reads it once list[0] is set, no copy.
//
// Launched ahead, right after the launch that runs a batch to layer l and before the host
// knows what is left, it gets rows_left = the history's count of active rows after l and
// report_left = where the host looks for that count: it writes the count there at once,
// and lists only when it is zero (every row then retired or died, and no later layer
// changes anything), else sets list[0] = -1. With rows_left null it always lists. One block, in rounds of
// LIST_THREADS x LIST_STEPS images (one round for 65536 images with the defaults): each
// warp takes LIST_STEPS x 32 consecutive images, one per lane at each step (coalesced
// loads, LIST_UNROLL steps in flight at once), and keeps each step's ballot of alive
// images in shared memory; warp 0 scans the warps' totals, then each warp writes its
// images at their place, in order.
extern "C" __global__ void __launch_bounds__(LIST_THREADS)
category_list(const int* __restrict__ which, int images, const unsigned char* __restrict__ alive,
              int* __restrict__ list, const int* __restrict__ rows_left, int* __restrict__ report_left) {
    if (rows_left != nullptr) {
        const int left = *rows_left;
        if (threadIdx.x == 0) {
            if (report_left != nullptr) *(volatile int*)report_left = left;
            if (left != 0) *(volatile int*)list = -1;
        }
        if (left != 0) return;
    }
    __shared__ unsigned ballots[LIST_WARPS][LIST_STEPS];
    __shared__ int before_warp[LIST_WARPS + 1];      // exclusive scan of the warps' totals, then the round's
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    int listed = 0;                                   // categories listed in earlier rounds
    for (int round = 0; round < images; round += LIST_THREADS * LIST_STEPS) {
        const int first = round + warp * LIST_STEPS * 32;
        int found = 0;
        for (int s0 = 0; s0 < LIST_STEPS; s0 += LIST_UNROLL) {
            int slot[LIST_UNROLL];
#pragma unroll
            for (int u = 0; u < LIST_UNROLL; ++u) {
                const int i = first + (s0 + u) * 32 + lane;
                slot[u] = i < images ? which[i] : -1;
            }
            bool on[LIST_UNROLL];
#pragma unroll
            for (int u = 0; u < LIST_UNROLL; ++u) on[u] = slot[u] >= 0 && alive[slot[u]] != 0;
#pragma unroll
            for (int u = 0; u < LIST_UNROLL; ++u) {
                const unsigned ballot = __ballot_sync(FULL_MASK, on[u]);
                if (lane == 0) ballots[warp][s0 + u] = ballot;
                found += __popc(ballot);
            }
        }
        if (lane == 0) before_warp[warp] = found;
        __syncthreads();
        if (warp == 0) {
            const int total = lane < LIST_WARPS ? before_warp[lane] : 0;
            const int upto = warp_inclusive_sum(total);
            if (lane < LIST_WARPS) before_warp[lane] = upto - total;
            if (lane == 31) before_warp[LIST_WARPS] = upto;
        }
        __syncthreads();
        int at = 1 + listed + before_warp[warp];
        for (int s = 0; s < LIST_STEPS; ++s) {
            const unsigned ballot = ballots[warp][s];
            if ((ballot >> lane) & 1) list[at + __popc(ballot & ((1u << lane) - 1))] = first + s * 32 + lane;
            at += __popc(ballot);
        }
        listed += before_warp[LIST_WARPS];
        __syncthreads();                              // before the next round reuses the shared arrays
    }
    __threadfence_system();                           // the entries reach the host before their number
    __syncthreads();
    if (threadIdx.x == 0) *(volatile int*)list = listed;
}
