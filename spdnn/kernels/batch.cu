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

// found[i] = whether image i's row (slot which[i]) is a category.
extern "C" __global__ void alive_images(const int* __restrict__ which, int images,
                                        const unsigned char* __restrict__ alive,
                                        unsigned char* __restrict__ found) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < images; i += gridDim.x * blockDim.x)
        found[i] = alive[which[i]];
}
