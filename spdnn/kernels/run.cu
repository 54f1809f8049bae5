// A run of pattern layers in one launch: layers [first, end), each of whose columns d
// reads two inputs, d and (d + shift) mod inputs, the smaller one first, in one shared
// order of WIDTH entries (layout.py's `pattern` and `shift`: RadiX-Net's first block).
// Rows are independent from one layer to the next, so a group of ROW_THREADS threads
// takes one row and carries it through the run in shared memory: the row is read from
// memory once and written once, where layer by layer (pattern.cu) it is read and written
// once per layer. Each output is computed as pattern.cu computes it (the same products,
// added in the stored order on registers, then `activate`), so results match it and the
// CPU backend bit for bit. A row stops where it dies or retires (rows_fate.cuh).
//
// Layers are described by RunLayer records in device memory (cuda.py's RUN_LAYER dtype).
// A block owns the active rows [lo, hi) of layer `first` (block_rows) and splits them
// among its GROUPS groups; a group loads its next row into registers while it works on
// the one before. A thread computes 4 consecutive outputs at a time (16-byte reads and
// writes of shared memory; inputs and outputs are multiples of 4).
//
// Where most rows are active, 70-90% of these layers' inputs are zeros, and a quad of
// outputs whose 8 inputs are all zeros (10-45% of quads) is 4 zeros. Where a row takes
// several warps (ROW_THREADS > 32) each warp writes those at once and queues the other
// quads (a ring of QUEUE per warp), which its lanes compute once 32 are queued, one quad
// a lane, so that the long sums run with every lane busy. Measured on an H200, that made
// the run launch 6-10% shorter at N = 65536 (rows of 4096 floats, 128 threads) and 5-10%
// longer at 16384 (rows of 1024, one warp), so rows of a warp or less keep the plain loop
// (gpu-notes, version 18). The block
// counts each layer's kept and retired rows and images in shared memory and adds them to
// history[4 (l + 1) ...] once; the rows kept by layer end - 1 go to y_out (their values)
// and active_out (their slots, staged at staged[lo ...] first). report[first] gets the
// input count as the launch starts, report[l] for the later layers of the run once every
// block is done. Built at run time by CuPy (NVRTC) with -D options; the defaults below let
// `nvcc -c` compile this file alone.

#include "rotation.cuh"
#include "rows_fate.cuh"

#ifndef PATTERN
#define PATTERN "0101"       // which of the two inputs each stored entry reads, in order
#endif
#define WIDTH ((int)sizeof(PATTERN) - 1)
#ifndef THREADS
#define THREADS 256
#endif
#ifndef ROW_THREADS
#define ROW_THREADS 64       // threads that carry one row: a power of two, 4 .. THREADS
#endif
#ifndef WIDEST
#define WIDEST 256           // floats of the run's widest row, a multiple of 4
#endif
#ifndef OCCUPANCY
#define OCCUPANCY 1024       // threads a multiprocessor that the registers are sized for
#endif
#ifndef MAX_LAYERS
#define MAX_LAYERS 16        // layers of one launch at most
#endif
#ifndef NEGATIVE_BIAS
#define NEGATIVE_BIAS 0      // 1 when the bias is below zero: `activate` needs no zero test
#endif
#define GROUPS (THREADS / ROW_THREADS)
#define SKIP_ZEROS (ROW_THREADS > 32)    // rows of several warps: queue the non-zero quads
#define QUEUE 64                         // a warp's ring of queued quads: at most 31 + 32

#if ROW_THREADS > 32 && GROUPS > 1 && GROUPS > 15
#error "groups of several warps take the named barriers 1 .. GROUPS"
#endif
#if WIDEST % 4 != 0
#error "WIDEST is a multiple of 4"
#endif

struct RunLayer {
    int inputs, outputs, shift;
    float weight;
};

__device__ __forceinline__ constexpr int order(int k) { return PATTERN[k] - '0'; }

// The lanes of this thread's group within its warp (groups of up to 32 threads).
__device__ __forceinline__ unsigned group_mask() {
#if ROW_THREADS >= 32
    return FULL_MASK;
#else
    return ((1u << ROW_THREADS) - 1) << (threadIdx.x % 32 / ROW_THREADS * ROW_THREADS);
#endif
}

// The sum of `value` over this thread's row group (groups of up to 32 threads). Below a
// warp, a butterfly of shuffles: each step is one instruction for all the warp's groups,
// where __reduce_add_sync with a group's mask runs once per group (ncu: 8 times a
// layer at 4 threads a row, 12-16% of the run launch's stall samples at N = 1024).
__device__ __forceinline__ int group_sum(int value) {
#if ROW_THREADS >= 32
    return warp_sum(value);
#else
#pragma unroll
    for (int offset = ROW_THREADS / 2; offset > 0; offset /= 2)
        value += __shfl_xor_sync(group_mask(), value, offset);
    return value;
#endif
}

// Wait for the other threads of this row group (their shared-memory writes become visible).
__device__ __forceinline__ void group_sync(int group) {
#if ROW_THREADS <= 32
    __syncwarp(group_mask());
#elif GROUPS == 1
    __syncthreads();
#else
    asm volatile("bar.sync %0, %1;" ::"r"(group + 1), "n"(ROW_THREADS) : "memory");
#endif
}

// Outputs d .. d + 3 of the row in x, each summed in the stored order and activated as
// pattern.cu does, into next; their bits ORed into `seen` (an output other than +-0
// leaves one below the sign bit), `below` set where one of them is not YMAX. A row needs
// no more to know its fate (non-zero somewhere; all YMAX), and counting outputs cost ~6
// instructions an output.
__device__ __forceinline__ void pattern_quad(const float* x, int d, const RunLayer& layer,
                                             float bias, float ymax, float* next, unsigned& seen,
                                             bool& below) {
    float in[2][4];
    gather_rotated<false>(x, d, layer.shift, layer.inputs, in);
    float y[4];
#pragma unroll
    for (int v = 0; v < 4; ++v) {
        const float product[2] = {mul_rn(in[0][v], layer.weight), mul_rn(in[1][v], layer.weight)};
        float acc = product[order(0)];
#pragma unroll
        for (int k = 1; k < WIDTH; ++k) acc = add_rn(acc, product[order(k)]);
        y[v] = activate<!NEGATIVE_BIAS>(acc, bias, ymax);
        seen |= __float_as_uint(y[v]);
        below |= y[v] != ymax;
    }
    *reinterpret_cast<float4*>(next + d) = make_float4(y[0], y[1], y[2], y[3]);
}

// The lanes of this warp below this one.
__device__ __forceinline__ unsigned lanes_before() { return (1u << (threadIdx.x % 32)) - 1; }

extern "C" __global__ void __launch_bounds__(THREADS, OCCUPANCY / THREADS)
pattern_run(const RunLayer* __restrict__ layers, int first, int end,
            const float* __restrict__ y_in, float* __restrict__ y_out,
            const int* __restrict__ active_in, int* __restrict__ active_out,
            int* __restrict__ history, int* __restrict__ report,
            const int* __restrict__ multiplicity, unsigned char* __restrict__ retired,
            int* __restrict__ staged, const int* __restrict__ retire_layer,
            int* __restrict__ done_blocks, float bias, float ymax) {
    extern __shared__ __align__(16) float rows[];   // GROUPS x 2 x WIDEST: a row, its next
    __shared__ RunLayer table[MAX_LAYERS];   // layers [first, end)
    __shared__ int retire[MAX_LAYERS];       // may layer first + l retire all-YMAX rows
    __shared__ int tally[MAX_LAYERS][4];     // per layer: kept rows, images, retired, images
#if ROW_THREADS > 32
    __shared__ int row_marks[GROUPS][2];         // the row's summed marks by layer parity
#endif
#if SKIP_ZEROS
    __shared__ unsigned short queues[THREADS / 32][QUEUE];   // quads queued, by warp
    unsigned short* const queue = queues[threadIdx.x / 32];
#endif
    __shared__ int base;
#if ROW_THREADS <= 32
    __shared__ int claimed;                  // the block's rows taken, from lo (claim)
#endif

    const int n = history[4 * first], depth = end - first;
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[first] = n;
    int lo, hi;
    block_rows(n, lo, hi);
#if ROW_THREADS <= 32
    if (threadIdx.x == 0) claimed = lo + GROUPS;   // row lo + g is group g's first
#endif
    for (int i = threadIdx.x; i < MAX_LAYERS * 4; i += THREADS) tally[i / 4][i % 4] = 0;
    for (int i = threadIdx.x; i < depth; i += THREADS) {
        table[i] = layers[first + i];
        retire[i] = retire_layer[first + i];
    }
    __syncthreads();

    const int group = threadIdx.x / ROW_THREADS, t = threadIdx.x % ROW_THREADS;
    float* const mine = rows + group * 2 * WIDEST;   // buffer p at mine + p * WIDEST
    const int quads = table[0].inputs / 4;           // of an input row

    // A group's next row is loaded into registers while it works on the row before, so
    // that no row starts by waiting on memory.
    constexpr int AHEAD = (WIDEST / 4 + ROW_THREADS - 1) / ROW_THREADS;
    float4 ahead[AHEAD];
    int slot_ahead = 0, images_ahead = 0;
    const auto fetch = [&](int r) {          // row r's slot, images and values
        slot_ahead = active_in[r];
        images_ahead = multiplicity[slot_ahead];
        const float4* in = reinterpret_cast<const float4*>(y_in) + (long long)slot_ahead * quads;
#pragma unroll
        for (int i = 0; i < AHEAD; ++i)
            if (t + i * ROW_THREADS < quads) ahead[i] = __ldg(in + t + i * ROW_THREADS);
    };
    // A group's rows after its first: for a group of a warp or less, the block's next row
    // not yet taken, so that the groups of a warp and the warps of a block run out of rows
    // together however long their rows live (dealt every GROUPS-th, they did not: at
    // N = 1024 the sums ran with 24 of 32 lanes, ncu of 2c7105b; with claims the launch
    // went 52.5 -> 48.5 us under ncu, 493bd81); a group of several warps, whose claim
    // would cost a barrier, takes every GROUPS-th row.
    const auto claim = [&](int r) {
#if ROW_THREADS <= 32
        int next = 0;
        if (t == 0) next = atomicAdd(&claimed, 1);
        return __shfl_sync(group_mask(), next, threadIdx.x % 32 / ROW_THREADS * ROW_THREADS);
#else
        return r + GROUPS;
#endif
    };
    if (lo + group < hi) fetch(lo + group);

    // The groups of a warp step together, one layer of each one's own row a step, and a
    // group whose row ends (dies, retires, or leaves the run) takes its next row at once,
    // at the run's first layer: so that the rows under a warp that end at different layers
    // keep the warp's lanes on the same instructions. (As a loop over rows and, within, over
    // layers, the groups of a warp went apart where one row ended before the others: at
    // N = 1024 the run's sums ran with 20 of 32 lanes on average, ncu of b4082ed.)
    int r = lo + group, r_ahead = hi, slot = 0, images = 0, l = 0, cur = 0;
    bool has = r < hi;           // this group has a row; the same on all its threads
    const auto start = [&]() {   // row r, fetched ahead, into buffer 0 at the first layer
        slot = slot_ahead;
        images = images_ahead;
#pragma unroll
        for (int i = 0; i < AHEAD; ++i)
            if (t + i * ROW_THREADS < quads)
                reinterpret_cast<float4*>(mine)[t + i * ROW_THREADS] = ahead[i];
        r_ahead = claim(r);
        if (r_ahead < hi) fetch(r_ahead);
        l = 0;
        cur = 0;
    };
    if (has) start();
    while (__any_sync(FULL_MASK, has)) {
        if (has) {
            const RunLayer layer = table[l];
#if ROW_THREADS > 32
            if (t == 0) row_marks[group][cur] = 0;   // unread since the layer before last
#endif
            group_sync(group);   // the row is in buffer cur (and its marks are zero)
            const float* x = mine + cur * WIDEST;
            float* next = mine + (cur ^ 1) * WIDEST;
            unsigned seen = 0;           // pattern_quad's marks of this thread's outputs
            bool below = false;
#if SKIP_ZEROS
            // a quad whose 8 inputs are zeros has 4 zero sums, which activate to 0, where
            // the weight is finite (0 x inf is NaN); the warp queues the other quads and
            // computes them 32 at a time, one a lane
            const bool finite = (__float_as_uint(layer.weight) & 0x7f800000u) != 0x7f800000u;
            int head = 0, tail = 0;      // the warp's queue, the same on all its lanes
            for (int d0 = 0; d0 < layer.outputs; d0 += 4 * ROW_THREADS) {
                const int d = d0 + 4 * t;
                bool queued = false;
                if (d < layer.outputs) {
                    float in[2][4];
                    gather_rotated<false>(x, d, layer.shift, layer.inputs, in);
                    unsigned bits = 0;
#pragma unroll
                    for (int v = 0; v < 4; ++v)
                        bits |= __float_as_uint(in[0][v]) | __float_as_uint(in[1][v]);
                    queued = (bits << 1) != 0 || !finite;     // a non-zero input (sign aside)
                    if (!queued) {
                        *reinterpret_cast<float4*>(next + d) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                        below |= 0.0f != ymax;
                    }
                }
                const unsigned ballot = __ballot_sync(FULL_MASK, queued);
                if (queued) queue[(tail + __popc(ballot & lanes_before())) & (QUEUE - 1)] = d;
                tail += __popc(ballot);
                if (tail - head >= 32) {
                    __syncwarp();        // the queue written
                    pattern_quad(x, queue[(head + threadIdx.x % 32) & (QUEUE - 1)], layer, bias, ymax,
                                 next, seen, below);
                    head += 32;
                    __syncwarp();        // the queue read before it is written again
                }
            }
            __syncwarp();
            if (head + (int)(threadIdx.x % 32) < tail)
                pattern_quad(x, queue[(head + threadIdx.x % 32) & (QUEUE - 1)], layer, bias, ymax, next,
                             seen, below);
#else
            for (int d = 4 * t; d < layer.outputs; d += 4 * ROW_THREADS)
                pattern_quad(x, d, layer, bias, ymax, next, seen, below);
#endif
            // the row's marks in one sum: its threads with a non-zero output (low half), and
            // with an output not YMAX (high half); at most THREADS each
            int marks = ((seen << 1) != 0) | below << 16;
#if ROW_THREADS <= 32
            marks = group_sum(marks);
#else
            marks = warp_sum(marks);
            if (t % 32 == 0) atomicAdd(&row_marks[group][cur], marks);
            group_sync(group);   // the marks and the next row are complete
            marks = row_marks[group][cur];
#endif
            // row_fate's rule (non-zero somewhere; all YMAX), with the row's images read ahead
            const bool alive = (marks & 0xffff) != 0;
            const bool retiring = alive && retire[l] && (marks >> 16) == 0;
            const bool keep = alive && !retiring;
            if (t == 0) {
                if (keep) {
                    const int at = atomicAdd(&tally[l][0], 1);
                    atomicAdd(&tally[l][1], images);
                    if (l == depth - 1) staged[lo + at] = slot;
                } else if (retiring) {
                    atomicAdd(&tally[l][2], 1);
                    atomicAdd(&tally[l][3], images);
                    retired[slot] = 1;
                }
            }
            cur ^= 1;
            if (keep && l == depth - 1) {    // each thread copies the outputs it computed
                float4* out = reinterpret_cast<float4*>(y_out + (long long)slot * layer.outputs);
                for (int c = t; c < layer.outputs / 4; c += ROW_THREADS)
                    out[c] = reinterpret_cast<const float4*>(next)[c];
            }
            if (keep && l < depth - 1) {
                ++l;                     // the same answer on every thread of the group
            } else {
                group_sync(group);       // done with the buffers before the next row fills them
                r = r_ahead;
                has = r < hi;
                if (has) start();
            }
        }
    }

    // the block's counts, each layer's with one atomic each; the kept slots of the last
    // layer to their place in the next active list
    __syncthreads();
    const int last = depth - 1;
    const int kept = tally[last][0];
    if (threadIdx.x == 0) base = kept ? atomicAdd(&history[4 * end], kept) : 0;
    for (int i = threadIdx.x; i < (last + 1) * 4; i += THREADS) {
        const int l = i / 4, k = i % 4;
        if ((l != last || k != 0) && tally[l][k] != 0)
            atomicAdd(&history[4 * (first + l + 1) + k], tally[l][k]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kept; i += THREADS) active_out[base + i] = staged[lo + i];

    // the last block to finish reports every later layer's input count to the host
    if (last_block(done_blocks)) {
        if (report != nullptr)
            for (int l = first + 1 + threadIdx.x; l < end; l += THREADS)
                report[l] = *(volatile int*)&history[4 * l];
        if (threadIdx.x == 0) *done_blocks = 0;
    }
}
