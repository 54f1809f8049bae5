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
// A block owns the active rows [lo, hi) (rows_fate.cuh) and takes GROUPS of them at a
// time, ROW_WARPS warps per row. Built at run time by CuPy (NVRTC) with -D options; the
// defaults below let `nvcc -c` compile this file standalone.

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
#define WARPS (THREADS / 32)
#define GROUPS (WARPS / ROW_WARPS)
#define ROW_THREADS (ROW_WARPS * 32)
#define UNROLL 4

extern "C" __global__ void __launch_bounds__(THREADS, 2048 / THREADS)
first_layer(const long long* __restrict__ x_ptr, const feature_index* __restrict__ x_col,
            float* __restrict__ y_out, const int* __restrict__ active_in,
            int* __restrict__ active_out, int* __restrict__ history, int layer_index,
            int* __restrict__ report, const int* __restrict__ multiplicity,
            unsigned char* __restrict__ retired, int* __restrict__ staged,
            const int* __restrict__ fanout, int outputs, float term, float bias, float ymax,
      const int* __restrict__ retire_layer) {
    extern __shared__ int counts[];          // GROUPS rows of outputs + 1 counters
    __shared__ RowTally tally;
    __shared__ int row_slot[GROUPS], row_nonzero[GROUPS], row_saturated[GROUPS];

    const int* history_in = history + 4 * layer_index;
    const int retire = retire_layer[layer_index];   // may this layer retire all-YMAX rows
    const int n = history_in[0];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[layer_index] = n;
    int lo, hi;
    block_rows(n, lo, hi);
    start_tally(tally);
    const int stride = outputs + 1;           // the last counter takes the padding
    for (int i = threadIdx.x; i < GROUPS * stride; i += THREADS) counts[i] = 0;

    const int group = threadIdx.x / ROW_THREADS, t = threadIdx.x % ROW_THREADS;
    const int lane = threadIdx.x % 32;
    int* mine = counts + group * stride;
    for (int first = lo; first < hi; first += GROUPS) {
        const int r = first + group;
        const bool live = r < hi;
        const int slot = live ? active_in[r] : 0;
        __syncthreads();   // counters zeroed, the last rows' tally done with row_slot
        if (t == 0) {
            row_slot[group] = slot;
            row_nonzero[group] = 0;
            row_saturated[group] = 0;
        }
        if (live) {
            const long long begin = x_ptr[slot], end = x_ptr[slot + 1];
            for (long long e0 = begin + t; e0 < end; e0 += UNROLL * ROW_THREADS) {
                int feature[UNROLL];
#pragma unroll
                for (int u = 0; u < UNROLL; ++u) {
                    const long long e = e0 + u * ROW_THREADS;
                    feature[u] = e < end ? (int)__ldg(x_col + e) : -1;
                }
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
            }
        }
        __syncthreads();
        if (live) {
            float* out = y_out + (long long)slot * outputs;
            int nonzero = 0, saturated = 0;
            for (int d0 = 0; d0 < outputs; d0 += ROW_THREADS) {
                const int d = d0 + t;
                float y = 0.0f;
                if (d < outputs) {
                    const int count = mine[d];
                    mine[d] = 0;
                    y = activate(__fmul_rn((float)count, term), bias, ymax);
                    out[d] = y;
                }
                nonzero += __popc(__ballot_sync(FULL_MASK, y > 0.0f));
                saturated += __popc(__ballot_sync(FULL_MASK, d < outputs && y == ymax));
            }
            if (t == 0) mine[outputs] = 0;
            if (lane == 0) {
                atomicAdd(&row_nonzero[group], nonzero);
                atomicAdd(&row_saturated[group], saturated);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            const int rows = min(GROUPS, hi - first);
            account_rows(lane < rows, lane < rows ? row_slot[lane] : 0,
                         lane < rows ? row_nonzero[lane] : 0, lane < rows ? row_saturated[lane] : 0,
                         outputs, retire, multiplicity, retired, tally.counts, staged + lo);
        }
    }
    publish_rows(tally, staged + lo, active_out, history + 4 * (layer_index + 1));
}
