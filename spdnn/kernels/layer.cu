// One layer of the challenge, fused, for any weights: for every active row,
//     Y_out = min(YMAX, max(0, Y_in W + bias where Y_in W != 0)),
// then the row's bookkeeping (rows_fate.cuh). pattern.cu and first.cu are faster kernels
// for two shapes of constant-weight layer; this one takes every other layer.
//
// Layout (spdnn/backends/layout.py): W is stored as its distinct columns in ELL, `stride`
// entries per column (the first `width` real, the rest zero-weight padding), and the
// activations as dense rows of the previous layer's distinct columns (`inputs` of them).
// Each output sums its terms in the stored order with separate multiply and add, exactly
// as the CPU backend does, so results match it bit for bit.
//
// A tile of ROWS input rows sits in shared memory; lane (group, row) of a warp sums COLS
// output columns of its row. Rows wider than shared memory (ROWS = 1 only) go through in
// `chunk`-column passes, every thread keeping its sums in registers; their indices are
// ascending within each column (padding repeats the last), so every sum keeps its order.
//
// Rows are *slots* of the batch: `active_in` lists the history_in[0] slots to compute;
// the kernel appends the slots still active to `active_out`, counting in history_out
// (active slots, their images, retired slots, their images). history_in = history +
// 4 * layer, history_out = history_in + 4. The grid is persistent: blocks loop over work
// items, so a launch needs no row count from the host. Block 0 copies the input count to
// `report[layer]` (host memory) so that the host learns it without waiting.
//
// Built at run time by CuPy (NVRTC) with -D options choosing the variant; the defaults
// below let `nvcc -c` compile this file standalone.

#include "features.cuh"
#include "rows_fate.cuh"

#ifndef ROWS
#define ROWS 8               // feature rows per tile: the lanes of a warp sharing a column
#endif
#ifndef THREADS
#define THREADS 512
#endif
#ifndef COLS
#define COLS 4               // output columns per thread at a time
#endif
#ifndef SPARSE_INPUT
#define SPARSE_INPUT 0       // 1: the input rows are the CSR features (the first layer)
#endif
#ifndef CONST_WEIGHT
#define CONST_WEIGHT 0       // 1: every weight equals `weight` and no column is padded
#endif
#ifndef INDEX_BYTES
#define INDEX_BYTES 2        // 2: 16-bit indices, 4: 32-bit
#endif

#if INDEX_BYTES == 2
typedef unsigned short index_t;
#else
typedef unsigned int index_t;
#endif

#define GROUPS (32 / ROWS)                  // output columns a warp works on at once
#define WARPS (THREADS / 32)
#define STEP (WARPS * GROUPS * COLS)        // output columns a block computes per step
#define PER_LOAD (16 / INDEX_BYTES)         // indices per 16-byte load

// Where input column c of tile row 0 lives in shared memory; row t is at tile_offset(c) ^ t.
// The XOR swizzle keeps both the row-wise tile loads and the column-wise gathers of a
// group of ROWS lanes free of bank conflicts. layout.py encodes indices the same way.
__device__ __forceinline__ int tile_offset(int c) {
    return c * ROWS + ((c / GROUPS) & (ROWS - 1));
}

__device__ __forceinline__ unsigned int word_of(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ int index_at(const uint4& v, int k) {
#if INDEX_BYTES == 2
    return (word_of(v, k >> 1) >> ((k & 1) * 16)) & 0xffff;
#else
    return (int)word_of(v, k);
#endif
}

__device__ __forceinline__ float value_at(const float4* v, int k) {
    const float4 q = v[k >> 2];
    const int i = k & 3;
    return i == 0 ? q.x : i == 1 ? q.y : i == 2 ? q.z : q.w;
}

// Add the entries k0 .. k0 + PER_LOAD - 1 (those below `width`) of this thread's columns.
// With `ranged`, only inputs in [c0, c0 + span) count: the part of the row in the tile.
template <bool CHECK_WIDTH, bool RANGED>
__device__ __forceinline__ void add_entries(float* acc, const int* column, const index_t* index,
                                            const float* value, int stride, int k0, int width,
                                            float weight, const float* tile, int row, int c0,
                                            int span) {
    uint4 offsets[COLS];
#if !CONST_WEIGHT
    float4 values[COLS][PER_LOAD / 4];
#endif
#pragma unroll
    for (int q = 0; q < COLS; ++q) {
        const long long at = (long long)column[q] * stride + k0;
        offsets[q] = __ldg(reinterpret_cast<const uint4*>(index + at));
#if !CONST_WEIGHT
#pragma unroll
        for (int v = 0; v < PER_LOAD / 4; ++v)
            values[q][v] = __ldg(reinterpret_cast<const float4*>(value + at) + v);
#endif
    }
#pragma unroll
    for (int k = 0; k < PER_LOAD; ++k) {
        if (CHECK_WIDTH && k0 + k >= width) break;
#pragma unroll
        for (int q = 0; q < COLS; ++q) {
            const int c = index_at(offsets[q], k);
#if CONST_WEIGHT
            const float w = weight;
#else
            const float w = value_at(values[q], k);
#endif
            if (RANGED) {
                if ((unsigned)(c - c0) < (unsigned)span)
                    acc[q] = add_rn(acc[q], mul_rn(tile[c - c0], w));
            } else {
                acc[q] = add_rn(acc[q], mul_rn(tile[c ^ row], w));
            }
        }
    }
}

template <bool RANGED>
__device__ __forceinline__ void add_columns(float* acc, const int* column, const index_t* index,
                                            const float* value, int stride, int width,
                                            float weight, const float* tile, int row, int c0,
                                            int span) {
    int k0 = 0;
    for (; k0 + PER_LOAD <= width; k0 += PER_LOAD)   // whole loads: no per-entry checks
        add_entries<false, RANGED>(acc, column, index, value, stride, k0, width, weight, tile,
                                   row, c0, span);
    if (k0 < width)
        add_entries<true, RANGED>(acc, column, index, value, stride, k0, width, weight, tile,
                                  row, c0, span);
}

// After a block has computed its share of the outputs of `rows` rows, finish the rows
// once every block working on them is done. With one share per row the block finishes
// them at once; otherwise shares add their counts in `slot_stats` and the last one to
// arrive (counted in tile_done[work_tile]) finishes. Called by every thread of the block.
__device__ void close_rows(int shares, int work_tile, int rows, const int* row_slot,
                           const int* row_nonzero, const int* row_saturated, int outputs,
                           int retire, const int* multiplicity, unsigned char* retired,
                           int* active_out, int* history_out, int* slot_stats,
                           int* tile_done, int* last_share) {
    const int t = threadIdx.x;
    int nonzero = 0, saturated = 0;
    if (shares > 1) {
        if (t < rows) {
            atomicAdd(&slot_stats[2 * row_slot[t]], row_nonzero[t]);
            atomicAdd(&slot_stats[2 * row_slot[t] + 1], row_saturated[t]);
        }
        __threadfence();
        __syncthreads();
        if (t == 0) *last_share = atomicAdd(&tile_done[work_tile], 1) == shares - 1;
        __syncthreads();
        if (!*last_share) return;
        __threadfence();
        if (t < rows) {
            nonzero = atomicExch(&slot_stats[2 * row_slot[t]], 0);
            saturated = atomicExch(&slot_stats[2 * row_slot[t] + 1], 0);
        }
        if (t == 0) tile_done[work_tile] = 0;
    } else if (t < rows) {
        nonzero = row_nonzero[t];
        saturated = row_saturated[t];
    }
    if (t < 32)
        account_rows(t < rows, t < rows ? row_slot[t] : 0, nonzero, saturated, outputs, retire,
                     multiplicity, retired, history_out, active_out);
}

#define FILL_BATCH 4          // tile elements a thread loads before storing any
#define QUAD_BATCH 2          // the same in 16-byte loads of 4 elements

// Put input columns [c0, c1) of the work item's rows into the tile (value true) or, for
// sparse rows, clear what an earlier call put there (value false). All rows at once, a
// few loads in flight per thread: the loads' latency, not their bytes, is what costs here,
// so dense rows aligned to 16 bytes come 4 inputs a load.
// Sparse row t's entries are the row_first[t] + (e - row_start[t]) for e in
// [row_start[t], row_start[t + 1]).
__device__ __forceinline__ void fill_tile(float* tile, int rows, const int* row_slot,
                                          const long long* row_first, const int* row_start,
                                          int c0, int c1, bool value, const float* y_in,
                                          int inputs, const feature_index* x_col, const float* x_val) {
#if SPARSE_INPUT
    const int total = row_start[rows];
    for (int e0 = threadIdx.x; e0 < total; e0 += FILL_BATCH * THREADS) {
        int at[FILL_BATCH];
        float v[FILL_BATCH];
#pragma unroll
        for (int u = 0; u < FILL_BATCH; ++u) {
            const int e = e0 + u * THREADS;
            at[u] = -1;
            if (e < total) {
                int t = 0;                      // the last row starting at or before e
                for (int half = ROWS / 2; half > 0; half /= 2)
                    if (t + half < rows && row_start[t + half] <= e) t += half;
                const long long entry = row_first[t] + (e - row_start[t]);
                const int c = x_col[entry];
                v[u] = value ? x_val[entry] : 0.0f;
                if (c >= c0 && c < c1) at[u] = tile_offset(c - c0) ^ t;
            }
        }
#pragma unroll
        for (int u = 0; u < FILL_BATCH; ++u)
            if (at[u] >= 0) tile[at[u]] = v[u];
    }
#else
    const int span = c1 - c0, total = rows * span;
    if (((inputs | c0 | span) & 3) == 0) {      // rows 16-byte aligned: 4 inputs a load
        const int quads = total / 4, quad_span = span / 4;
        for (int e0 = threadIdx.x; e0 < quads; e0 += QUAD_BATCH * THREADS) {
            float4 v[QUAD_BATCH];
#pragma unroll
            for (int u = 0; u < QUAD_BATCH; ++u) {
                const int e = e0 + u * THREADS;
                if (e < quads) {
                    const int t = e / quad_span, c = 4 * (e - t * quad_span);
                    v[u] = __ldg(reinterpret_cast<const float4*>(
                        y_in + (long long)row_slot[t] * inputs + c0 + c));
                }
            }
#pragma unroll
            for (int u = 0; u < QUAD_BATCH; ++u) {
                const int e = e0 + u * THREADS;
                if (e < quads) {
                    const int t = e / quad_span, c = 4 * (e - t * quad_span);
                    tile[tile_offset(c) ^ t] = v[u].x;
                    tile[tile_offset(c + 1) ^ t] = v[u].y;
                    tile[tile_offset(c + 2) ^ t] = v[u].z;
                    tile[tile_offset(c + 3) ^ t] = v[u].w;
                }
            }
        }
        return;
    }
    for (int e0 = threadIdx.x; e0 < total; e0 += FILL_BATCH * THREADS) {
        int at[FILL_BATCH];
        float v[FILL_BATCH];
#pragma unroll
        for (int u = 0; u < FILL_BATCH; ++u) {
            const int e = e0 + u * THREADS;
            at[u] = -1;
            if (e < total) {
                const int t = e / span, c = e - t * span;
                v[u] = y_in[(long long)row_slot[t] * inputs + c0 + c];
                at[u] = tile_offset(c) ^ t;
            }
        }
#pragma unroll
        for (int u = 0; u < FILL_BATCH; ++u)
            if (at[u] >= 0) tile[at[u]] = v[u];
    }
#endif
}

extern "C" __global__ void __launch_bounds__(THREADS, 1024 / THREADS)
layer(const float* __restrict__ y_in, const long long* __restrict__ x_ptr,
      const feature_index* __restrict__ x_col, const float* __restrict__ x_val, float* __restrict__ y_out,
      const int* __restrict__ active_in, int* __restrict__ active_out, int* __restrict__ history,
      int layer_index, int* __restrict__ report, const int* __restrict__ multiplicity,
      unsigned char* __restrict__ retired, int* __restrict__ slot_stats,
      int* __restrict__ tile_done, const index_t* __restrict__ index,
      const float* __restrict__ value, int inputs, int outputs, int width, int stride,
      int chunk, float weight, float bias, float ymax,
      const int* __restrict__ retire_layer) {
    extern __shared__ float tile[];          // chunk x ROWS floats
    __shared__ int row_slot[ROWS], row_nonzero[ROWS], row_saturated[ROWS], row_start[ROWS + 1];
    __shared__ long long row_first[ROWS];
    __shared__ int last_share;

    const int* history_in = history + 4 * layer_index;
    const int retire = retire_layer[layer_index];   // may this layer retire all-YMAX rows
    int* history_out = history + 4 * (layer_index + 1);
    const int n = history_in[0];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[layer_index] = n;
    const int tiles = (n + ROWS - 1) / ROWS;
    const int passes = (inputs + chunk - 1) / chunk;
    const int steps = (outputs + STEP - 1) / STEP;
    // with several passes each share is one step, so every sum stays in its registers
    const int shares = passes > 1 ? steps : max(1, min(steps, (int)gridDim.x / max(tiles, 1)));
    const int share_steps = (steps + shares - 1) / shares;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = lane / ROWS, row = lane % ROWS;

#if SPARSE_INPUT
    // zero once; each work item clears what it put in
    for (int e = threadIdx.x; e < chunk * ROWS; e += THREADS) tile[e] = 0.0f;
#endif
    for (int work = blockIdx.x; work < tiles * shares; work += gridDim.x) {
        const int work_tile = work / shares, share = work % shares;
        const int rows = min(ROWS, n - work_tile * ROWS);
        __syncthreads();   // the previous work item is done with the tile and the counters
        if (threadIdx.x < 32) {
            const int t = threadIdx.x;
            const int slot = t < rows ? active_in[work_tile * ROWS + t] : 0;
            int count = 0;
#if SPARSE_INPUT
            if (t < rows) {
                row_first[t] = x_ptr[slot];
                count = (int)(x_ptr[slot + 1] - row_first[t]);
            }
#endif
            count = warp_inclusive_sum(count);
            if (t < ROWS) {
                row_slot[t] = slot;
                row_nonzero[t] = 0;
                row_saturated[t] = 0;
                row_start[t + 1] = count;
            }
            if (t == 0) row_start[0] = 0;
        }
        __syncthreads();
        if (passes == 1) {
            fill_tile(tile, rows, row_slot, row_first, row_start, 0, inputs, true, y_in, inputs, x_col, x_val);
            __syncthreads();
        }

        float* out_row = y_out + (long long)row_slot[row] * outputs;
        int nonzero = 0, saturated = 0;
        for (int s = 0; s < share_steps; ++s) {
            // consecutive groups take consecutive columns; with one group, a lane's are adjacent
            const int first = (share * share_steps + s) * STEP + warp * GROUPS * COLS + group;
            int column[COLS];
            float acc[COLS];
#pragma unroll
            for (int q = 0; q < COLS; ++q) {
                column[q] = min(first + q * GROUPS, outputs - 1);  // past the end: computed, not stored
                acc[q] = 0.0f;
            }
            if (passes == 1) {
                add_columns<false>(acc, column, index, value, stride, width, weight, tile, row, 0, 0);
            } else {
                for (int c0 = 0; c0 < inputs; c0 += chunk) {
                    const int c1 = min(inputs, c0 + chunk);
                    __syncthreads();
                    fill_tile(tile, rows, row_slot, row_first, row_start, c0, c1, true, y_in, inputs, x_col, x_val);
                    __syncthreads();
                    add_columns<true>(acc, column, index, value, stride, width, weight, tile, row,
                                      c0, c1 - c0);
#if SPARSE_INPUT
                    __syncthreads();
                    fill_tile(tile, rows, row_slot, row_first, row_start, c0, c1, false, y_in, inputs, x_col, x_val);
#endif
                }
            }
            if (row < rows) {
                float y[COLS];
#pragma unroll
                for (int q = 0; q < COLS; ++q) {
                    y[q] = activate(acc[q], bias, ymax);
                    if (first + q * GROUPS < outputs) {
                        nonzero += !is_zero(y[q]);
                        saturated += y[q] == ymax;
                    }
                }
                if (GROUPS == 1 && COLS == 4 && (outputs & 3) == 0 && first + 3 < outputs) {
                    float4 packed;
                    packed.x = y[0];
                    packed.y = y[1];
                    packed.z = y[2];
                    packed.w = y[3];
                    *reinterpret_cast<float4*>(out_row + first) = packed;
                } else {
#pragma unroll
                    for (int q = 0; q < COLS; ++q)
                        if (first + q * GROUPS < outputs) out_row[first + q * GROUPS] = y[q];
                }
            }
        }
        for (int offset = ROWS; offset < 32; offset *= 2) {     // sum over the row's lanes
            nonzero += __shfl_xor_sync(FULL_MASK, nonzero, offset);
            saturated += __shfl_xor_sync(FULL_MASK, saturated, offset);
        }
        if (group == 0 && row < rows) {
            atomicAdd(&row_nonzero[row], nonzero);
            atomicAdd(&row_saturated[row], saturated);
        }
#if SPARSE_INPUT
        if (passes == 1) {
            __syncthreads();   // every lane is done with the tile: clear what was put in
            fill_tile(tile, rows, row_slot, row_first, row_start, 0, inputs, false, y_in, inputs, x_col, x_val);
        }
#endif
        __syncthreads();
        close_rows(shares, work_tile, rows, row_slot, row_nonzero, row_saturated, outputs, retire,
                   multiplicity, retired, active_out, history_out, slot_stats, tile_done, &last_share);
    }
}
