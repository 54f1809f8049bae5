// The first layer when it is a sum of counts: every feature value is one power of two v
// and every weight one power of two w (layout.py's `fanout` is set), so each product is
// v * w = `term` exactly and every partial sum of a column is an exact multiple of it:
// in any order the sum is (inputs of the column that are on) x term. The kernel counts,
// for each active row, how many of its non-zero features each distinct column reads:
// each feature adds 1 to the counters of the columns in fanout[feature] (shared-memory
// integer atomics, so the order does not matter), then the counts become the layer's
// outputs. The feature values are never read: only the column index of each non-zero
// (2 bytes with 16-bit indices, features.cuh) instead of index and value.
//
// With CIRCULANT (layout.py's `circulant`: input i feeds the columns (i + s) mod OUTPUTS
// for each s in fanout[0], the shifts; RadiX-Net's first layer, official files included,
// has shifts OUTPUTS - 1 and 0), the kernel counts each feature once, at its index mod
// OUTPUTS, without reading the fanout, and column d's count is the sum over the shifts s of
// the counts at (d - s) mod OUTPUTS. A group then keeps two sets of counters and alternates
// them by row, so that one is cleared while the other is read.
//
// A block owns the active rows [lo, hi) (rows_fate.cuh) and splits them among GROUPS
// groups of ROW_WARPS warps; each group takes its rows one after another on its own,
// synchronising only its own warps (a warp sync, or a named barrier for several warps),
// so that a long row holds up its group and not the block. The group's first warp keeps
// the fates of up to 32 rows in shared memory and accounts them together, one per lane.
// A row's slot and feature offsets are fetched while the row before it is worked on; with
// VEC = 4 a thread writes 4 outputs at once (16-byte stores) and clears 4 counters.
//
// With BITS (circulant, VEC = 4) the features come as folded bits instead of column
// indices: a row is PLANES planes of PLANE_WORDS 32-bit words (ROW_STRIDE words with the
// padding to 16 bytes), and feature i is bit (i mod OUTPUTS) of plane i / OUTPUTS
// (fold_bits below builds them). Slot d's count is then the number of planes whose bit d
// is on, so a thread counts 4 slots at once, a byte each, from one word of every plane:
// no atomics, and 1 bit per input where the indices take 16 bits per non-zero (fewer
// bytes wherever more than 1 input in 16 is on; the challenge's images are about 10% on).
// The counts stay packed, 4 a word, and a column's sum over the shifts is added 4 columns
// at a time (bytes picked from two words by __byte_perm; PLANES x FANOUT < 256, so no
// byte overflows). A group copies each row's bits into shared memory a row ahead
// (cp.async, 16 bytes a thread, two buffers), so that a row's count waits on shared
// memory, not on DRAM, and waits for the next row's copies at the barrier ending a row.
// Built at run time by CuPy (NVRTC) with -D options; the defaults below let `nvcc -c`
// compile this file standalone.

#include "features.cuh"
#include "rows_fate.cuh"

#ifndef THREADS
#define THREADS 512
#endif
#ifndef ROW_WARPS
#define ROW_WARPS 1          // warps that share one row: more for rows with more features
#endif
#ifndef FANOUT
#define FANOUT 2             // columns listed per feature (padded with `outputs`)
#endif
#ifndef CIRCULANT
#define CIRCULANT 0          // 1: the fanout is circulant (then OUTPUTS is the layer's outputs)
#endif
#ifndef OUTPUTS
#define OUTPUTS 64
#endif
#ifndef VEC
#define VEC 1                // outputs a thread writes at once: 4 when outputs % 4 == 0
#endif
#ifndef BITS
#define BITS 0               // 1: the features are folded bits (x_bits), not x_ptr / x_col
#endif
#ifndef PLANES
#define PLANES 16            // BITS: planes a row of bits holds (inputs / OUTPUTS, rounded up)
#endif
#define PLANE_WORDS ((OUTPUTS + 31) / 32)
#define ROW_STRIDE ((PLANES * PLANE_WORDS + 3) & ~3)
#define WARPS (THREADS / 32)
#define GROUPS (WARPS / ROW_WARPS)
#define ROW_THREADS (ROW_WARPS * 32)
#define UNROLL 4
#define QUADS (OUTPUTS / 4)
#if BITS
#define ROW_COUNTERS ((2 * QUADS + 3) & ~3)   // two sets of packed counts, 4 a word; 16 B
#elif CIRCULANT
#define ROW_COUNTERS (2 * OUTPUTS)
#else
#define ROW_COUNTERS ((outputs + 4) & ~3)     // the counter at outputs takes the padding
#endif
#define GROUP_WORDS (ROW_COUNTERS + (BITS ? 2 * ROW_STRIDE : 0))   // cuda.first_group_words

#if VEC != 1 && VEC != 4
#error "VEC is 1 or 4"
#endif
#if CIRCULANT && OUTPUTS % VEC != 0
#error "VEC divides OUTPUTS"
#endif
#if BITS && !(CIRCULANT && VEC == 4 && PLANES * FANOUT < 256)
#error "BITS needs CIRCULANT, VEC 4 and PLANES x FANOUT < 256 (a sum is one byte)"
#endif
#if BITS
static_assert(ROW_COUNTERS % 4 == 0 && ROW_STRIDE % 4 == 0,
              "a group's rows of bits start on 16 bytes (cp.async copies 16 bytes)");
#endif

#if ROW_WARPS > 1 && GROUPS > 15
#error "groups of several warps take the named barriers 1 .. GROUPS"
#endif

// Group ID - 1 (or any later one) waits at the named barrier ID (or a later one): constant
// ids, so that the kernel holds GROUPS + 1 barriers rather than all 16.
template <int ID>
__device__ __forceinline__ void named_sync(int group) {
    if constexpr (ID < GROUPS) {
        if (group != ID - 1) {
            named_sync<ID + 1>(group);
            return;
        }
    }
    asm volatile("bar.sync %0, %1;" ::"n"(ID), "n"(ROW_THREADS) : "memory");
}

// Start copying a row of folded bits into shared memory, 16 bytes a thread of the group,
// as one cp.async group (committed even when empty, so that every row commits one).
__device__ __forceinline__ void fetch_bits(unsigned* to, const unsigned* from, bool any,
                                           int t) {
    for (int i = t * 4; any && i < ROW_STRIDE; i += ROW_THREADS * 4) {
        const unsigned where = (unsigned)__cvta_generic_to_shared(to + i);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(where), "l"(from + i)
                     : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// Wait for the other warps of this row group (their shared-memory writes become visible).
__device__ __forceinline__ void group_sync(int group) {
#if ROW_WARPS == 1
    __syncwarp();
#elif GROUPS == 1
    __syncthreads();
#else
    named_sync<1>(group);
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS, 2048 / THREADS)
first_layer(const long long* __restrict__ x_ptr, const feature_index* __restrict__ x_col,
            const unsigned* __restrict__ x_bits, float* __restrict__ y_out,
            const int* __restrict__ active_in, int* __restrict__ active_out,
            int* __restrict__ history, int layer_index, int* __restrict__ report,
            const int* __restrict__ multiplicity, unsigned char* __restrict__ retired,
            int* __restrict__ staged, const int* __restrict__ fanout, int outputs, float term,
            float bias, float ymax, const int* __restrict__ retire_layer) {
    extern __shared__ __align__(16) int counts[];   // GROUPS x (counters, 2 rows of bits)
    __shared__ RowTally tally;
    __shared__ int row_slot[GROUPS][32], row_nonzero[GROUPS][32], row_saturated[GROUPS][32];

    const int* history_in = history + 4 * layer_index;
    const int retire = retire_layer[layer_index];   // may this layer retire all-YMAX rows
    const int n = history_in[0];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[layer_index] = n;
    int lo, hi;
    block_rows(n, lo, hi);
    start_tally(tally);
    const int stride = GROUP_WORDS;
    for (int i = threadIdx.x; i < GROUPS * stride; i += THREADS) counts[i] = 0;
    for (int i = threadIdx.x; i < GROUPS * 32; i += THREADS)
        row_nonzero[i / 32][i % 32] = row_saturated[i / 32][i % 32] = 0;
    __syncthreads();

    const int group = threadIdx.x / ROW_THREADS, t = threadIdx.x % ROW_THREADS;
    const int lane = threadIdx.x % 32;
    const bool leader = t < 32;               // the group's first warp accounts its rows
    int* mine = counts + group * stride;
    int held = 0;                             // rows of the group not yet accounted
    const auto account_held = [&](int rows) {     // by the leader, a row per lane
        const bool live = lane < rows;
        account_rows(live, live ? row_slot[group][lane] : 0,
                     live ? row_nonzero[group][lane] : 0, live ? row_saturated[group][lane] : 0,
                     outputs, retire, multiplicity, retired, tally.counts, staged + lo);
        row_nonzero[group][lane] = row_saturated[group][lane] = 0;
    };
    // the next row's slot is fetched as a row starts and its offsets once the row is
    // counted, so that a row starts without waiting on two dependent loads
    int slot_next = lo + group < hi ? active_in[lo + group] : 0;
#if !BITS
    long long begin_next = 0;
    int length_next = 0;
    if (lo + group < hi) {
        begin_next = x_ptr[slot_next];
        length_next = (int)(x_ptr[slot_next + 1] - begin_next);
    }
#else
    // a row's bits are copied in while the row before it is worked on, so its slot is
    // looked up two rows ahead
    unsigned* bits_in = reinterpret_cast<unsigned*>(mine + ROW_COUNTERS);   // 2 x ROW_STRIDE
    int slot_after = lo + group + GROUPS < hi ? active_in[lo + group + GROUPS] : 0;
    fetch_bits(bits_in, x_bits + (long long)slot_next * ROW_STRIDE, lo + group < hi, t);
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    group_sync(group);
#endif
#if CIRCULANT
    int shift[FANOUT];                        // OUTPUTS - input 0's columns (the shifts)
#pragma unroll
    for (int f = 0; f < FANOUT; ++f) shift[f] = OUTPUTS - __ldg(fanout + f);
#endif
    for (int r = lo + group; r < hi; r += GROUPS) {
        const int slot = slot_next;
#if BITS
        slot_next = slot_after;
        if (r + 2 * GROUPS < hi) slot_after = active_in[r + 2 * GROUPS];
        fetch_bits(bits_in + (~held & 1) * ROW_STRIDE, x_bits + (long long)slot_next * ROW_STRIDE,
                   r + GROUPS < hi, t);
        unsigned* row_quads = reinterpret_cast<unsigned*>(mine) + (held & 1) * QUADS;
        const unsigned* row_bits = bits_in + (held & 1) * ROW_STRIDE;
        for (int d = t * 4; d < OUTPUTS; d += ROW_THREADS * 4) {
            const unsigned* column = row_bits + d / 32;
            const int at = d % 32;
            unsigned packed = 0;              // slots d .. d + 3 counted, a byte each
#pragma unroll 16
            for (int p = 0; p < PLANES; ++p)  // the plane's 4 bits spread to the 4 bytes
                packed += ((column[p * PLANE_WORDS] >> at & 0xFu) * 0x204081u) & 0x01010101u;
            row_quads[d / 4] = packed;
        }
#else
        const long long begin = begin_next, end = begin_next + length_next;
        if (r + GROUPS < hi) slot_next = active_in[r + GROUPS];
#if CIRCULANT
        int* row_counts = mine + (held & 1) * OUTPUTS;     // held is even at every 32 rows
        int* next_counts = mine + (~held & 1) * OUTPUTS;
#endif
        for (long long e0 = begin + t; e0 < end; e0 += UNROLL * ROW_THREADS) {
            int feature[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const long long e = e0 + u * ROW_THREADS;
                feature[u] = e < end ? (int)__ldg(x_col + e) : -1;
            }
#if CIRCULANT
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
                if (feature[u] >= 0) atomicAdd(&row_counts[feature[u] % OUTPUTS], 1);
#else
            int column[UNROLL][FANOUT];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
#pragma unroll
                for (int f = 0; f < FANOUT; ++f)
                    column[u][f] = feature[u] >= 0
                        ? __ldg(fanout + (long long)feature[u] * FANOUT + f) : outputs;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
#pragma unroll
                for (int f = 0; f < FANOUT; ++f) atomicAdd(&mine[column[u][f]], 1);
#endif
        }
        if (r + GROUPS < hi) {
            begin_next = x_ptr[slot_next];
            length_next = (int)(x_ptr[slot_next + 1] - begin_next);
        }
#endif
        group_sync(group);                    // the row's counts are complete
        float* out = y_out + (long long)slot * outputs;
        int nonzero = 0, saturated = 0;      // over this thread's outputs, then its warp's
        for (int d = t * VEC; d < outputs; d += ROW_THREADS * VEC) {
            int count[VEC];
#if BITS
            unsigned sums = 0;                // columns d .. d + 3, a byte each
#pragma unroll
            for (int f = 0; f < FANOUT; ++f) {   // slots (d + shift) mod OUTPUTS .. + 3
                int q = d / 4 + shift[f] / 4;
                q = q < QUADS ? q : q - QUADS;
                sums += __byte_perm(row_quads[q], row_quads[q + 1 < QUADS ? q + 1 : 0],
                                    0x3210 + shift[f] % 4 * 0x1111);
            }
#pragma unroll
            for (int v = 0; v < VEC; ++v) count[v] = sums >> 8 * v & 0xFF;
#elif CIRCULANT
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                count[v] = 0;
#pragma unroll
                for (int f = 0; f < FANOUT; ++f) {
                    const int c = d + v + shift[f];      // (d + v - shift) mod OUTPUTS
                    count[v] += row_counts[c < OUTPUTS ? c : c - OUTPUTS];
                }
            }
            int* cleared = next_counts + d;  // last read by the row before, next counted into
#endif
#if !CIRCULANT && VEC == 4
            const int4 counted = *reinterpret_cast<const int4*>(mine + d);
            count[0] = counted.x, count[1] = counted.y, count[2] = counted.z, count[3] = counted.w;
            int* cleared = mine + d;
#elif !CIRCULANT
            count[0] = mine[d];
            int* cleared = mine + d;
#endif
            float y[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                y[v] = activate(mul_rn((float)count[v], term), bias, ymax);
                nonzero += !is_zero(y[v]);
                saturated += y[v] == ymax;
            }
#if VEC == 4
#if !BITS
            *reinterpret_cast<int4*>(cleared) = make_int4(0, 0, 0, 0);
#endif
            *reinterpret_cast<float4*>(out + d) = make_float4(y[0], y[1], y[2], y[3]);
#else
            *cleared = 0;
            out[d] = y[0];
#endif
        }
        nonzero = warp_sum(nonzero);
        saturated = warp_sum(saturated);
#if !CIRCULANT
        if (t == 0) mine[outputs] = 0;
#endif
        if (t == 0) row_slot[group][held] = slot;
        if (lane == 0) {
            atomicAdd(&row_nonzero[group][held], nonzero);
            atomicAdd(&row_saturated[group][held], saturated);
        }
#if BITS
        asm volatile("cp.async.wait_group 0;" ::: "memory");   // the next row's bits landed
#endif
        group_sync(group);                    // its totals complete, the counters zero
        if (++held == 32) {
            if (leader) account_held(32);
            held = 0;
        }
    }
    if (leader && held > 0) account_held(held);
    publish_rows(tally, staged + lo, active_out, history + 4 * (layer_index + 1));
}

// The features of `rows` rows (CSR: x_ptr by row, x_col) as the folded bits first_layer
// reads with BITS, into `bits` (rows x ROW_STRIDE words, zero before): a block a row.
extern "C" __global__ void fold_bits(const long long* __restrict__ x_ptr,
                                     const feature_index* __restrict__ x_col, int rows,
                                     unsigned* __restrict__ bits) {
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        unsigned* row_bits = bits + (long long)r * ROW_STRIDE;
        for (long long e = x_ptr[r] + threadIdx.x; e < x_ptr[r + 1]; e += blockDim.x) {
            const int i = x_col[e], d = i % OUTPUTS;
            atomicOr(row_bits + i / OUTPUTS * PLANE_WORDS + d / 32, 1u << d % 32);
        }
    }
}
