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
// With BITS (circulant, VEC = 4) the features come as folded masks instead of column
// indices: input i is bit i / OUTPUTS (its plane) of slot i mod OUTPUTS's mask, a mask
// MASK_BYTES bytes (8, 16 or 32 planes), a row OUTPUTS masks (ROW_STRIDE words with the
// padding to 16 bytes; fold_bits below builds them). A slot's count is then the popcount
// of its mask, and a column's count the sum of popcounts at its shifts: no counters, no
// atomics, and 1 bit per input where the indices take 16 bits per non-zero (fewer bytes
// wherever more than 1 input in 16 is on; the challenge's images are about 10% on). A
// column's count is at most MOST_COUNT, so the block tabulates activate(count x term) and
// whether it is non-zero and YMAX once, and an output is a lookup. The shifts (SHIFT0 ..)
// are compiled in, so that which masks a quad of columns reads is known at compile time.
// A group copies each row's masks into shared memory a row ahead (cp.async, 16 bytes a
// thread, two buffers), so that a row waits on shared memory, not on DRAM, and waits for
// the next row's copies at the barrier ending a row. Where a row has fewer quads of
// outputs than a warp has lanes (64 outputs: 16), a warp takes ROWS_AT_ONCE rows side by
// side, each on its own lanes.
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
#ifndef MASK_BYTES
#define MASK_BYTES 2         // BITS: bytes of a slot's mask, 1, 2 or 4 (8, 16, 32 planes)
#endif
#ifndef ROWS_AT_ONCE
#define ROWS_AT_ONCE 1       // BITS, one warp a group: rows a group takes side by side
#endif
// BITS: the circulant's shifts (input 0's columns), SHIFT0 .. SHIFT<FANOUT - 1>
#ifndef SHIFT0
#define SHIFT0 (OUTPUTS - 1)
#endif
#ifndef SHIFT1
#define SHIFT1 0
#endif
#ifndef SHIFT2
#define SHIFT2 0
#endif
#ifndef SHIFT3
#define SHIFT3 0
#endif
#ifndef SHIFT4
#define SHIFT4 0
#endif
#ifndef SHIFT5
#define SHIFT5 0
#endif
#ifndef SHIFT6
#define SHIFT6 0
#endif
#ifndef SHIFT7
#define SHIFT7 0
#endif
#define ROW_STRIDE ((OUTPUTS * MASK_BYTES / 4 + 3) & ~3)   // words a row of masks, 16 B
#define MOST_COUNT (8 * MASK_BYTES * FANOUT)              // a column's count at most
#define WARPS (THREADS / 32)
#define GROUPS (WARPS / ROW_WARPS)
#define ROW_THREADS (ROW_WARPS * 32)
#define SUB_THREADS (ROW_THREADS / ROWS_AT_ONCE)   // the threads of one of those rows
#define UNROLL 4
#define QUADS (OUTPUTS / 4)
#if BITS
#define ROW_COUNTERS 0                        // no counters: popcounts of the masks
#elif CIRCULANT
#define ROW_COUNTERS (2 * OUTPUTS)
#else
#define ROW_COUNTERS ((outputs + 4) & ~3)     // the counter at outputs takes the padding
#endif
// cuda.first_group_words
#define GROUP_WORDS (ROW_COUNTERS + (BITS ? 2 * ROWS_AT_ONCE * ROW_STRIDE : 0))

#if VEC != 1 && VEC != 4
#error "VEC is 1 or 4"
#endif
#if CIRCULANT && OUTPUTS % VEC != 0
#error "VEC divides OUTPUTS"
#endif
#if BITS && !(CIRCULANT && VEC == 4 && (MASK_BYTES == 1 || MASK_BYTES == 2 || MASK_BYTES == 4))
#error "BITS needs CIRCULANT, VEC 4 and masks of 1, 2 or 4 bytes"
#endif
#if BITS && FANOUT > 8
#error "BITS takes at most 8 shifts (SHIFT0 .. SHIFT7)"
#endif
#if ROWS_AT_ONCE > 1 && !(BITS && ROW_WARPS == 1 && 32 % ROWS_AT_ONCE == 0)
#error "several rows at once need BITS, one warp a group, and a power of two up to 32"
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

// Start copying a row of folded bits into shared memory, 16 bytes a thread of the row
// (thread t of SUB_THREADS), as one cp.async group (committed even when empty, so that
// every row commits one).
__device__ __forceinline__ void fetch_bits(unsigned* to, const unsigned* from, bool any,
                                           int t) {
    for (int i = t * 4; any && i < ROW_STRIDE; i += SUB_THREADS * 4) {
        const unsigned where = (unsigned)__cvta_generic_to_shared(to + i);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(where), "l"(from + i)
                     : "memory");
    }
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// The circulant's f-th shift as a column offset: column d reads slot (d + offset) mod
// OUTPUTS, 1 <= offset <= OUTPUTS (a constant once the loop over f is unrolled).
__device__ __forceinline__ constexpr int slot_offset(int f) {
    constexpr int shifts[] = {SHIFT0, SHIFT1, SHIFT2, SHIFT3, SHIFT4, SHIFT5, SHIFT6, SHIFT7};
    return OUTPUTS - shifts[f];
}

// The MASK_BYTES words of the masks of slots 4q .. 4q + 3.
__device__ __forceinline__ void load_quad(const unsigned* masks, int q, unsigned* w) {
    if constexpr (MASK_BYTES == 4) {
        const uint4 v = reinterpret_cast<const uint4*>(masks)[q];
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else if constexpr (MASK_BYTES == 2) {
        const uint2 v = reinterpret_cast<const uint2*>(masks)[q];
        w[0] = v.x, w[1] = v.y;
    } else {
        w[0] = masks[q];
    }
}

// Mask j of the words w (j < 8: two quads of masks), in the low bits of a word.
__device__ __forceinline__ unsigned mask_at(const unsigned* w, int j) {
    if constexpr (MASK_BYTES == 4) return w[j];
    else if constexpr (MASK_BYTES == 2) return j % 2 ? w[j / 2] >> 16 : w[j / 2] & 0xFFFFu;
    else return __byte_perm(w[j / 4], 0, 0x4440 + j % 4);
}

// Column d + v's count for v < 4: the popcounts of the masks it reads, one per shift.
__device__ __forceinline__ void column_counts(const unsigned* masks, int d, int* count) {
#pragma unroll
    for (int v = 0; v < 4; ++v) count[v] = 0;
#pragma unroll
    for (int f = 0; f < FANOUT; ++f) {
        const int offset = slot_offset(f), at = offset % 4;   // constants
        int q = d / 4 + offset / 4;
        q = q < QUADS ? q : q - QUADS;
        unsigned w[2 * MASK_BYTES];
        load_quad(masks, q, w);
        if (at != 0) load_quad(masks, q + 1 < QUADS ? q + 1 : 0, w + MASK_BYTES);
#pragma unroll
        for (int v = 0; v < 4; ++v) count[v] += __popc(mask_at(w, at + v));
    }
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

// The sum of `value` over each aligned set of LANES lanes (a warp's, for 32 or more),
// called by every lane of the warp.
template <int LANES>
__device__ __forceinline__ int lanes_sum(int value) {
    if constexpr (LANES >= 32) {
        return warp_sum(value);
    } else {
#pragma unroll
        for (int offset = LANES / 2; offset > 0; offset /= 2)
            value += __shfl_xor_sync(FULL_MASK, value, offset);
        return value;
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 2048 / THREADS)
first_layer(const long long* __restrict__ x_ptr, const feature_index* __restrict__ x_col,
            const unsigned* __restrict__ x_bits, float* __restrict__ y_out,
            const int* __restrict__ active_in, int* __restrict__ active_out,
            int* __restrict__ history, int layer_index, int* __restrict__ report,
            const int* __restrict__ multiplicity, unsigned char* __restrict__ retired,
            int* __restrict__ staged, const int* __restrict__ fanout, int outputs, float term,
            float bias, float ymax, const int* __restrict__ retire_layer) {
    extern __shared__ __align__(16) int counts[];   // GROUPS x (counters or 2 rows of masks)
    __shared__ RowTally tally;
#if BITS
    // by count: the output, and 1 + (1 << 16) where it is non-zero and YMAX (as int bits)
    __shared__ float2 outcome[MOST_COUNT + 1];
#endif
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
#if BITS
    for (int c = threadIdx.x; c <= MOST_COUNT; c += THREADS) {
        const float y = activate(mul_rn((float)c, term), bias, ymax);
        outcome[c] = make_float2(y, __int_as_float(!is_zero(y) | (y == ymax) << 16));
    }
#endif
    __syncthreads();

    const int group = threadIdx.x / ROW_THREADS, t = threadIdx.x % ROW_THREADS;
    const int lane = threadIdx.x % 32;
    // a group takes ROWS_AT_ONCE rows side by side, r + sub, each on SUB_THREADS threads
    // (ts the thread's place among them), then moves on by STEP rows
    constexpr int STEP = GROUPS * ROWS_AT_ONCE;
    const int sub = t / SUB_THREADS, ts = t % SUB_THREADS;
    const int row0 = lo + group * ROWS_AT_ONCE + sub;   // this thread's first row
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
    int slot_next = row0 < hi ? active_in[row0] : 0;
#if !BITS
    long long begin_next = 0;
    int length_next = 0;
    if (row0 < hi) {
        begin_next = x_ptr[slot_next];
        length_next = (int)(x_ptr[slot_next + 1] - begin_next);
    }
#else
    // a row's masks are copied in while the row before it is worked on, so its slot is
    // looked up two rows ahead; two buffers (by the parity of the group's steps) of
    // ROWS_AT_ONCE rows of masks
    unsigned* bits_in = reinterpret_cast<unsigned*>(mine) + sub * ROW_STRIDE;
    int slot_after = row0 + STEP < hi ? active_in[row0 + STEP] : 0;
    fetch_bits(bits_in, x_bits + (long long)slot_next * ROW_STRIDE, row0 < hi, ts);
    int phase = 0;
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    group_sync(group);
#endif
#if CIRCULANT && !BITS
    int shift[FANOUT];                        // OUTPUTS - input 0's columns (the shifts)
#pragma unroll
    for (int f = 0; f < FANOUT; ++f) shift[f] = OUTPUTS - __ldg(fanout + f);
#endif
    for (int r = lo + group * ROWS_AT_ONCE; r < hi; r += STEP) {
        const int slot = slot_next, row = r + sub;
        const bool live = ROWS_AT_ONCE == 1 || row < hi;
#if BITS
        slot_next = slot_after;
        if (row + 2 * STEP < hi) slot_after = active_in[row + 2 * STEP];
        fetch_bits(bits_in + (phase ^ 1) * ROWS_AT_ONCE * ROW_STRIDE,
                   x_bits + (long long)slot_next * ROW_STRIDE, row + STEP < hi, ts);
        const unsigned* masks = bits_in + phase * ROWS_AT_ONCE * ROW_STRIDE;
        phase ^= 1;
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
        group_sync(group);                    // the row's counts are complete
#endif
        float* out = y_out + (long long)slot * outputs;
        int nonzero = 0, saturated = 0;      // over this thread's outputs, then its warp's
        for (int d = ts * VEC; live && d < outputs; d += SUB_THREADS * VEC) {
            int count[VEC];
#if BITS
            column_counts(masks, d, count);
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
#if BITS
            int fates = 0;                    // non-zero outputs + (YMAX outputs << 16)
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                const float2 o = outcome[count[v]];
                y[v] = o.x;
                fates += __float_as_int(o.y);
            }
            nonzero += fates & 0xFFFF;
            saturated += fates >> 16;
#else
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                y[v] = activate(mul_rn((float)count[v], term), bias, ymax);
                nonzero += !is_zero(y[v]);
                saturated += y[v] == ymax;
            }
#endif
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
        nonzero = lanes_sum<SUB_THREADS>(nonzero);
        saturated = lanes_sum<SUB_THREADS>(saturated);
#if !CIRCULANT
        if (t == 0) mine[outputs] = 0;
#endif
        if (ts == 0 && live) row_slot[group][held + sub] = slot;
        if (ts % 32 == 0 && live) {
            atomicAdd(&row_nonzero[group][held + sub], nonzero);
            atomicAdd(&row_saturated[group][held + sub], saturated);
        }
#if BITS
        asm volatile("cp.async.wait_group 0;" ::: "memory");   // the next row's masks landed
#endif
        group_sync(group);                    // its totals complete, the counters zero
        held += min(ROWS_AT_ONCE, hi - r);
        if (held == 32) {
            if (leader) account_held(32);
            held = 0;
            group_sync(group);    // the totals cleared before any thread adds to them again
        }
    }
    if (leader && held > 0) account_held(held);
    publish_rows(tally, staged + lo, active_out, history + 4 * (layer_index + 1));
}

// The features of `rows` rows (CSR: x_ptr by row, x_col) as the folded masks first_layer
// reads with BITS, into `bits` (rows x ROW_STRIDE words, zero before): a block a row.
extern "C" __global__ void fold_bits(const long long* __restrict__ x_ptr,
                                     const feature_index* __restrict__ x_col, int rows,
                                     unsigned* __restrict__ bits) {
    constexpr int PER_WORD = 4 / MASK_BYTES;          // masks a word
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        unsigned* row_bits = bits + (long long)r * ROW_STRIDE;
        for (long long e = x_ptr[r] + threadIdx.x; e < x_ptr[r + 1]; e += blockDim.x) {
            const int i = x_col[e], slot = i % OUTPUTS, plane = i / OUTPUTS;
            atomicOr(row_bits + slot / PER_WORD, 1u << (slot % PER_WORD * 8 * MASK_BYTES + plane));
        }
    }
}
