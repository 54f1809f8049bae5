// Several layers in one launch for the few rows left after the busy first layers: rows
// are independent from one layer to the next, so a group of threads takes one row and
// carries it through layers [first, end) in shared memory, with no launch or grid-wide
// wait between layers. Each output sums its stored entries in order with separate
// multiply and add, exactly as layer.cu does (any weights, any layout), so results match
// it bit for bit. A row stops early when it dies or retires (rows_fate.cuh).
//
// Layers are described by MarchLayer records in device memory (layout: cuda.py's
// MARCH_LAYER dtype), which a block copies into shared memory as it starts. The rows to
// carry are listed in `slots` (a copy of the active list into layer `first`); the
// survivors of layer end - 1 go to active_out and their values to y_out. Per layer l,
// history[4 (l + 1) ...] counts what layer l kept and retired, and report[l] gets layer
// l's input count once the launch is done. A launch given more than most_rows rows does
// nothing but report[first] = their count: the host may launch a march before it knows
// the count, then read the report to learn whether it ran.
//
// Built at run time by CuPy (NVRTC) with -D options; the defaults below let `nvcc -c`
// compile this file standalone.

#include "rows_fate.cuh"

#ifndef THREADS
#define THREADS 256
#endif
#ifndef ROW_THREADS
#define ROW_THREADS 32       // threads that carry one row
#endif
#ifndef MAX_LAYERS
#define MAX_LAYERS 32        // layers of one launch at most (cuda.py: MERGE_INTERVAL)
#endif
// What every layer of the march shares, when cuda.py finds it shared (the challenge's
// weights: 32 entries a column, 2-byte indices, one weight a layer): fixed here, the
// column sums lose a runtime test per entry. 0 (or -1 for the shift): read each record.
#ifndef FIXED_WIDTH
#define FIXED_WIDTH 0        // entries a column, equal to the stride, in every layer
#endif
#ifndef FIXED_INDEX_BYTES
#define FIXED_INDEX_BYTES 0  // 2 or 4 in every layer
#endif
#ifndef FIXED_SHIFT
#define FIXED_SHIFT -1       // input column = index >> FIXED_SHIFT in every layer
#endif
#ifndef CONSTANT_WEIGHTS
#define CONSTANT_WEIGHTS 0   // 1: no layer has values, each its one `weight`
#endif
// 1: each record's `index` is cuda.py's chunk-major copy (16-byte chunk c of every column
// side by side, then chunk c + 1), so that a warp's load of chunk c of its 32 columns reads
// 512 contiguous bytes instead of 16 bytes every 64 (half of each sector unused, 16 lines
// a load). Only with a fixed width of at most 64 bytes a column.
#ifndef CHUNK_MAJOR
#define CHUNK_MAJOR 0
#endif
#if CHUNK_MAJOR && (FIXED_WIDTH <= 0 || FIXED_INDEX_BYTES <= 0 || FIXED_WIDTH * FIXED_INDEX_BYTES > 64)
#error "CHUNK_MAJOR needs a fixed width of at most 64 bytes a column"
#endif
// > 0: each row buffer holds the row twice, the second copy from COPY_STRIDE floats on (a
// multiple of 32) with its words in another order (second_copy), and every index of the
// records (cuda.py's copies, FIXED_SHIFT 0) is a float offset into the buffer, in one copy
// or the other: layout.py's march_words picks, for each read of a warp, the copies that
// spread its words over more of the 32 banks (3.1 -> 2.1 wavefronts a read at N = 4096).
#ifndef COPY_STRIDE
#define COPY_STRIDE 0
#endif
#if COPY_STRIDE > 0 && (COPY_STRIDE % 32 != 0 || FIXED_SHIFT != 0)
#error "COPY_STRIDE needs a multiple of 32 and FIXED_SHIFT 0"
#endif
#ifndef OCCUPANCY
#define OCCUPANCY 1280       // threads an SM that ptxas plans registers for (48 at 5 x 256)
#endif
#define GROUPS (THREADS / ROW_THREADS)

struct MarchLayer {
    unsigned long long index;    // the layer's ELL indices (layout.py: tile offsets)
    unsigned long long values;   // its weights, or 0 when every weight is `weight`
    int inputs, outputs, width, stride;
    int shift;                   // input column = index >> shift
    int index_bytes;             // 2 or 4
    float weight;
    int unused;
};

// Where word i of a row sits in its second copy (layout.py: second_copy): the same 32-word
// line, turned within it so that words that share a bank in the first copy seldom do in the
// second.
__device__ __forceinline__ int second_copy(int i) {
    return COPY_STRIDE + (i & ~31) + ((i * 13 + (i >> 5) * 7) & 31);
}

__device__ __forceinline__ void group_sync(int group) {
#if ROW_THREADS == 32
    __syncwarp();
#else
    asm volatile("bar.sync %0, %1;" ::"r"(group + 1), "r"(ROW_THREADS) : "memory");
#endif
}

// acc plus the products of the stored entries k0 .. k0 + 16 / sizeof(Index) - 1 (those below
// `width`) whose indices are packed in `packed`, in order.
template <typename Index>
__device__ __forceinline__ float add_entries(const uint4& packed, int k0, int width, int shift,
                                             const float* values, float weight, const float* x,
                                             float acc) {
    constexpr int PER_LOAD = 16 / sizeof(Index);
    const unsigned int words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int j = 0; j < PER_LOAD; ++j) {
        if (k0 + j >= width) break;
        const unsigned int entry = sizeof(Index) == 2
            ? (words[j / 2] >> ((j & 1) * 16)) & 0xffffu : words[j];
        const float w = !CONSTANT_WEIGHTS && values != nullptr ? __ldg(values + k0 + j) : weight;
        acc = add_rn(acc, mul_rn(x[entry >> shift], w));
    }
    return acc;
}

// Output d's sum over its stored entries in order, from the row in x (shared memory).
// Indices come 16 bytes at a time (each column's entries start 16-byte aligned); a column
// of at most AT_ONCE such loads (32 entries of 2 bytes: RadiX-Net's) issues them all
// before the first add, so that their latencies overlap instead of adding up.
template <typename Index>
__device__ __forceinline__ float column_sum(const MarchLayer& layer, int d, const float* x) {
    constexpr int PER_LOAD = 16 / sizeof(Index);
    constexpr int AT_ONCE = 4;
    const int width = FIXED_WIDTH > 0 ? FIXED_WIDTH : layer.width;
    const int shift = FIXED_SHIFT >= 0 ? FIXED_SHIFT : layer.shift;
    const long long base = (long long)d * (FIXED_WIDTH > 0 ? FIXED_WIDTH : layer.stride);
    const uint4* index = CHUNK_MAJOR
        ? reinterpret_cast<const uint4*>(layer.index) + d
        : reinterpret_cast<const uint4*>(reinterpret_cast<const Index*>(layer.index) + base);
    const int step = CHUNK_MAJOR ? layer.outputs : 1;     // uint4s from a chunk to the next
    const float* values = !CONSTANT_WEIGHTS && layer.values
        ? reinterpret_cast<const float*>(layer.values) + base : nullptr;
    float acc = 0.0f;
    if (width <= AT_ONCE * PER_LOAD) {
        uint4 packed[AT_ONCE] = {};
#pragma unroll
        for (int c = 0; c < AT_ONCE; ++c)
            if (c * PER_LOAD < width) packed[c] = __ldg(index + c * step);
#pragma unroll
        for (int c = 0; c < AT_ONCE; ++c)
            acc = add_entries<Index>(packed[c], c * PER_LOAD, width, shift, values, layer.weight, x, acc);
    } else {
        for (int k0 = 0; k0 < width; k0 += PER_LOAD)
            acc = add_entries<Index>(__ldg(index + k0 / PER_LOAD), k0, width, shift, values,
                                     layer.weight, x, acc);
    }
    return acc;
}

// column_sum with the index width of `layer` (fixed when every layer shares it)
__device__ __forceinline__ float output_sum(const MarchLayer& layer, int d, const float* x) {
    if (FIXED_INDEX_BYTES == 2 || (FIXED_INDEX_BYTES == 0 && layer.index_bytes == 2))
        return column_sum<unsigned short>(layer, d, x);
    return column_sum<unsigned int>(layer, d, x);
}

// Without a number of blocks, ptxas gave the fixed build 40 registers and read each input
// from the row just before its multiply (4-5 instructions ahead, a median over the sums);
// planned for OCCUPANCY threads it takes 48 and reads them ~18 ahead, and 5 blocks of 256
// still give a group to each of the ~4600 rows that march at N = 1024.
extern "C" __global__ void __launch_bounds__(THREADS, OCCUPANCY / THREADS)
march(const MarchLayer* __restrict__ layers, int first, int end, const float* __restrict__ y_in,
      float* __restrict__ y_out, const int* __restrict__ slots, int* __restrict__ active_out,
      int* __restrict__ history, int* __restrict__ report, const int* __restrict__ multiplicity,
      unsigned char* __restrict__ retired, const int* __restrict__ retire_layer,
      int* __restrict__ done_blocks, int widest, int most_rows, float bias, float ymax) {
    extern __shared__ float rows[];          // GROUPS x 2 buffers: a row and its next layer
    __shared__ int row_nonzero[GROUPS][2], row_saturated[GROUPS][2];   // by layer parity
    __shared__ MarchLayer table[MAX_LAYERS];     // layers [first, end)
    __shared__ int retire[MAX_LAYERS];           // may layer first + i retire all-YMAX rows

    const int n = history[4 * first];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[first] = n;
    if (n > most_rows) return;               // too many rows to march: tiles take them
    // the records and retire flags in shared memory, so that no layer starts by waiting
    // for them in global memory (as kernels/run.cu does)
    for (int i = threadIdx.x; i < end - first; i += THREADS) {
        table[i] = layers[first + i];
        retire[i] = retire_layer[first + i];
    }
    __syncthreads();
    const int group = threadIdx.x / ROW_THREADS, t = threadIdx.x % ROW_THREADS;
    const int buffer = COPY_STRIDE > 0 ? 2 * COPY_STRIDE : widest;   // floats of one buffer
    float* const mine = rows + group * 2 * buffer;   // buffer p at mine + p * buffer

    for (int r = blockIdx.x * GROUPS + group; r < n; r += gridDim.x * GROUPS) {
        const int slot = slots[r];
        const int images = multiplicity[slot];
        int cur = 0;
        {
            const float* in = y_in + (long long)slot * table[0].inputs;
            for (int c = t; c < table[0].inputs; c += ROW_THREADS) {
                const float v = in[c];
                mine[c] = v;
                if (COPY_STRIDE > 0) mine[second_copy(c)] = v;
            }
        }
        for (int l = first; l < end; ++l) {
            const MarchLayer layer = table[l - first];
            if (t == 0) {        // nobody reads these since the last layer but one
                row_nonzero[group][cur] = 0;
                row_saturated[group][cur] = 0;
            }
            group_sync(group);   // the row is in buffer cur, the counters are zero
            const float* x = mine + cur * buffer;
            float* next = mine + (cur ^ 1) * buffer;
            int nonzero = 0, saturated = 0;
            for (int d = t; d < layer.outputs; d += ROW_THREADS) {
                const float y = activate(output_sum(layer, d, x), bias, ymax);
                next[d] = y;
                if (COPY_STRIDE > 0) next[second_copy(d)] = y;
                nonzero += !is_zero(y);
                saturated += y == ymax;
            }
            nonzero = warp_sum(nonzero);
            saturated = warp_sum(saturated);
            if ((t & 31) == 0) {
                atomicAdd(&row_nonzero[group][cur], nonzero);
                atomicAdd(&row_saturated[group][cur], saturated);
            }
            group_sync(group);   // the counts and the next row are complete
            const Fate fate = row_fate(true, slot, row_nonzero[group][cur], row_saturated[group][cur],
                                       layer.outputs, retire[l - first], multiplicity);
            int* history_out = history + 4 * (l + 1);
            if (t == 0) {
                if (fate.keep) {
                    const int at = atomicAdd(&history_out[0], 1);
                    atomicAdd(&history_out[1], images);
                    if (l == end - 1) active_out[at] = slot;
                } else if (fate.retiring) {
                    atomicAdd(&history_out[2], 1);
                    atomicAdd(&history_out[3], images);
                    retired[slot] = 1;
                }
            }
            cur ^= 1;
            if (!fate.keep) break;       // the same answer on every thread of the group
            if (l == end - 1) {
                float* out = y_out + (long long)slot * layer.outputs;
                for (int d = t; d < layer.outputs; d += ROW_THREADS) out[d] = next[d];
            }
        }
        group_sync(group);   // done with the buffers before the next row fills them
    }

    // the last block to finish reports every layer's input count to the host
    if (last_block(done_blocks)) {
        if (report != nullptr)
            for (int l = first + 1 + threadIdx.x; l < end; l += THREADS)
                report[l] = *(volatile int*)&history[4 * l];
        if (threadIdx.x == 0) *done_blocks = 0;
    }
}
