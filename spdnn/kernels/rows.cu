// Fingerprints and comparisons of activation rows, for merging identical rows.
//
// A row is a slot of the batch: `width` floats at values + slot * width. One warp works on
// one row (or one pair of rows). Built at run time by CuPy (NVRTC); compiles standalone
// with `nvcc -c`.

#include "ieee.cuh"
#include "warp.cuh"

__device__ __forceinline__ unsigned long long mix(unsigned long long x) {
    // splitmix64's finaliser
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// hashes[i] = sum over the non-zero entries of row slots[i] of mix(column, value bits):
// a sum, so the order in which lanes visit entries does not matter.
extern "C" __global__ void row_hashes(const float* __restrict__ values, int width,
                                      const int* __restrict__ slots, int n,
                                      unsigned long long* __restrict__ hashes) {
    const int lane = threadIdx.x & 31;
    const int warps = gridDim.x * (blockDim.x / 32);
    for (int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < n; i += warps) {
        const float* row = values + (long long)slots[i] * width;
        unsigned long long h = 0;
        for (int c = lane; c < width; c += 32) {
            const float y = row[c];
            if (!is_zero(y))
                h += mix(((unsigned long long)c << 32) ^ __float_as_uint(y));
        }
        for (int offset = 16; offset > 0; offset /= 2) h += __shfl_xor_sync(FULL_MASK, h, offset);
        if (lane == 0) hashes[i] = h;
    }
}

// equal[i] = 1 when rows slots[i] and others[i] hold the same values bit for bit.
extern "C" __global__ void rows_equal(const float* __restrict__ values, int width,
                                      const int* __restrict__ slots,
                                      const int* __restrict__ others, int n,
                                      unsigned char* __restrict__ equal) {
    const int lane = threadIdx.x & 31;
    const int warps = gridDim.x * (blockDim.x / 32);
    for (int i = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; i < n; i += warps) {
        const unsigned int* a = reinterpret_cast<const unsigned int*>(values) + (long long)slots[i] * width;
        const unsigned int* b = reinterpret_cast<const unsigned int*>(values) + (long long)others[i] * width;
        bool same = true;
        for (int c = lane; c < width && same; c += 32) same = a[c] == b[c];
        same = __all_sync(FULL_MASK, same);
        if (lane == 0) equal[i] = same;
    }
}
