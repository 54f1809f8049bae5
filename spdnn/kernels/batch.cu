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

// The sum of `value` over the threads before this one in the block (an exclusive scan),
// and the block's total in `total`. Every thread of the block calls it.
__device__ __forceinline__ int block_exclusive_sum(int value, int& total) {
    __shared__ int before_warp[LIST_WARPS + 1];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int upto = warp_inclusive_sum(value);
    if (lane == 31) before_warp[warp] = upto;
    __syncthreads();
    if (warp == 0) {
        const int sum = lane < LIST_WARPS ? before_warp[lane] : 0;
        const int warps_upto = warp_inclusive_sum(sum);
        if (lane < LIST_WARPS) before_warp[lane] = warps_upto - sum;
        if (lane == 31) before_warp[LIST_WARPS] = warps_upto;
    }
    __syncthreads();
    total = before_warp[LIST_WARPS];
    return before_warp[warp] + upto - value;
}

// The batch's categories in ascending order: list[1 ...] gets each image i < images whose
// row (slot which[i]) is alive, list[0] their number, written last. `list` may be host
// memory mapped for the device: the host reads it once list[0] is set, no copy.
//
// Launched ahead, right after the launch that runs a batch to layer l and before the host
// knows what is left, it gets rows_left = the history's count of active rows after l and
// report_left = where the host looks for that count: it writes the count there at once,
// and lists only when it is zero (every row then retired or died, and no later layer
// changes anything), else sets list[0] = -1. With rows_left null it always lists.
//
// Any grid of LIST_THREADS-thread blocks: each warp takes 32 consecutive images at a time
// and writes the ballot of those alive as one word of `words` (ceil(images / 32) words of
// device memory); the last block to finish (done_blocks counts them, and is left at zero)
// scans the words' bit counts, each thread over a run of consecutive words, and writes
// the images in order. One block alone was bound by its own instruction issue (~26 us for
// 60000 images on an H200).
extern "C" __global__ void __launch_bounds__(LIST_THREADS)
category_list(const int* __restrict__ which, int images, const unsigned char* __restrict__ alive,
              int* __restrict__ list, const int* __restrict__ rows_left, int* __restrict__ report_left,
              unsigned* __restrict__ words, int* __restrict__ done_blocks) {
    if (rows_left != nullptr) {
        const int left = *rows_left;
        if (blockIdx.x == 0 && threadIdx.x == 0) {
            if (report_left != nullptr) *(volatile int*)report_left = left;
            if (left != 0) *(volatile int*)list = -1;
        }
        if (left != 0) return;
    }
    const int lane = threadIdx.x % 32;
    const int word_count = (images + 31) / 32;
    const int warps = gridDim.x * LIST_WARPS;
    for (int w = blockIdx.x * LIST_WARPS + threadIdx.x / 32; w < word_count; w += warps) {
        const int i = w * 32 + lane;
        const unsigned ballot = __ballot_sync(FULL_MASK, i < images && alive[which[i]] != 0);
        if (lane == 0) words[w] = ballot;
    }

    if (!last_block(done_blocks)) return;
    const int per_thread = (word_count + LIST_THREADS - 1) / LIST_THREADS;
    const int first = min(word_count, threadIdx.x * per_thread);
    const int end = min(word_count, first + per_thread);
    int found = 0;
    for (int w = first; w < end; ++w) found += __popc(__ldcg(words + w));
    int total;
    int at = 1 + block_exclusive_sum(found, total);
    for (int w = first; w < end; ++w) {
        for (unsigned bits = __ldcg(words + w); bits != 0; bits &= bits - 1)
            list[at++] = w * 32 + __ffs(bits) - 1;
    }
    __threadfence_system();                           // the entries reach the host before their number
    __syncthreads();
    if (threadIdx.x == 0) {
        *(volatile int*)list = total;
        *done_blocks = 0;
    }
}
