// A batch's bookkeeping at its start and at its end, one launch each, so that neither
// costs a string of small host-launched array operations.
//
// Built at run time by CuPy (NVRTC); compiles standalone with `nvcc -c`.

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

#define FULL_MASK 0xffffffffu
#ifndef LIST_THREADS
#define LIST_THREADS 1024
#endif

// The batch's categories in ascending order: list[1 ...] gets each image i < images whose
// row (slot which[i]) is alive, list[0] their number. `list` may be host memory mapped for
// the device: the host reads it after one stream sync, no copy. One block: each thread
// takes a run of consecutive images and counts its categories, the block scans the counts,
// then each thread writes its own at their place.
extern "C" __global__ void __launch_bounds__(LIST_THREADS)
category_list(const int* __restrict__ which, int images, const unsigned char* __restrict__ alive,
              int* __restrict__ list) {
    __shared__ int before_warp[LIST_THREADS / 32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int per = (images + LIST_THREADS - 1) / LIST_THREADS;
    const int begin = min(images, threadIdx.x * per), end = min(images, begin + per);
    int mine = 0;
    for (int i = begin; i < end; ++i) mine += alive[which[i]] != 0;
    int upto = mine;                                   // inclusive scan within the warp
    for (int offset = 1; offset < 32; offset *= 2) {
        const int other = __shfl_up_sync(FULL_MASK, upto, offset);
        if (lane >= offset) upto += other;
    }
    if (lane == 31) before_warp[warp] = upto;
    __syncthreads();
    if (warp == 0) {                                   // scan the warps' totals
        const int total = lane < LIST_THREADS / 32 ? before_warp[lane] : 0;
        int sum = total;
        for (int offset = 1; offset < 32; offset *= 2) {
            const int other = __shfl_up_sync(FULL_MASK, sum, offset);
            if (lane >= offset) sum += other;
        }
        if (lane < LIST_THREADS / 32) before_warp[lane] = sum - total;
        if (lane == 31) list[0] = sum;
    }
    __syncthreads();
    int at = 1 + before_warp[warp] + upto - mine;
    for (int i = begin; i < end; ++i)
        if (alive[which[i]]) list[at++] = i;
}
