// One layer whose distinct columns all read a few inputs in one shared order (layout.py's
// `pattern`): output d of a row sums, in stored order, x[sources[pattern[k]][d]] * weight
// for k = 0 .. WIDTH-1. RadiX-Net's first block is such: every column reads two inputs,
// alternating, sixteen times each. Each distinct input is loaded and multiplied once; the
// WIDTH additions run in the stored order on registers, with the very same operands as
// layer.cu's, so results match it (and the CPU backend) bit for bit. No shared-memory
// tile and no gathers: a layer costs about its bytes.
//
// A block owns the active rows [lo, hi) (rows_fate.cuh); a warp takes `group` rows at a
// time and 32 consecutive outputs of one row per step, UNROLL steps in flight. Needs
// outputs % 32 == 0. Built at run time by CuPy (NVRTC) with -D options; the defaults
// below let `nvcc -c` compile this file standalone.

#include "rows_fate.cuh"

#ifndef PATTERN
#define PATTERN "0101"       // which distinct input each stored entry reads, in order
#define UNIQUE 2
#endif
#define WIDTH ((int)sizeof(PATTERN) - 1)
#ifndef THREADS
#define THREADS 512
#endif
#define UNROLL 4
#define WARPS (THREADS / 32)

__device__ __forceinline__ constexpr int order(int k) { return PATTERN[k] - '0'; }

extern "C" __global__ void __launch_bounds__(THREADS, 1024 / THREADS)
pattern_layer(const float* __restrict__ y_in, float* __restrict__ y_out,
              const int* __restrict__ active_in, int* __restrict__ active_out,
              int* __restrict__ history, int layer_index, int* __restrict__ report,
              const int* __restrict__ multiplicity, unsigned char* __restrict__ retired,
              int* __restrict__ staged, const int* __restrict__ sources, int inputs,
              int outputs, float weight, float bias, float ymax,
      const int* __restrict__ retire_layer) {
    __shared__ RowTally tally;
    __shared__ int row_nonzero[WARPS][32], row_saturated[WARPS][32];

    const int* history_in = history + 4 * layer_index;
    const int retire = retire_layer[layer_index];   // may this layer retire all-YMAX rows
    const int n = history_in[0];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[layer_index] = n;
    int lo, hi;
    block_rows(n, lo, hi);
    start_tally(tally);
    __syncthreads();

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int group = min(32, max(1, (hi - lo + WARPS - 1) / WARPS));   // rows per warp item
    const int steps_per_row = outputs / 32;
    for (int first = lo + warp * group; first < hi; first += WARPS * group) {
        const int rows = min(group, hi - first);
        const int my_slot = lane < rows ? active_in[first + lane] : 0;
        row_nonzero[warp][lane] = 0;
        row_saturated[warp][lane] = 0;
        __syncwarp();
        const int steps = rows * steps_per_row;
        for (int s0 = 0; s0 < steps; s0 += UNROLL) {
            float x[UNROLL][UNIQUE];
            int row[UNROLL], out[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {           // every load first, then the sums
                const int s = min(s0 + u, steps - 1);
                row[u] = s / steps_per_row;
                const int d = (s - row[u] * steps_per_row) * 32 + lane;
                const long long slot = __shfl_sync(FULL_MASK, my_slot, row[u]);
                out[u] = d;
                const float* in = y_in + slot * inputs;
#pragma unroll
                for (int k = 0; k < UNIQUE; ++k) x[u][k] = __ldg(in + __ldg(sources + k * outputs + d));
            }
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                if (s0 + u >= steps) break;                // uniform over the warp
                float product[UNIQUE];
#pragma unroll
                for (int k = 0; k < UNIQUE; ++k) product[k] = __fmul_rn(x[u][k], weight);
                float acc = 0.0f;
#pragma unroll
                for (int k = 0; k < WIDTH; ++k) acc = __fadd_rn(acc, product[order(k)]);
                const float y = activate(acc, bias, ymax);
                const long long slot = __shfl_sync(FULL_MASK, my_slot, row[u]);
                y_out[slot * outputs + out[u]] = y;
                const int nonzero = __popc(__ballot_sync(FULL_MASK, y > 0.0f));
                const int saturated = __popc(__ballot_sync(FULL_MASK, y == ymax));
                if (lane == 0) {
                    row_nonzero[warp][row[u]] += nonzero;
                    row_saturated[warp][row[u]] += saturated;
                }
            }
        }
        __syncwarp();
        tally_rows(tally, lane < rows, my_slot, row_nonzero[warp][lane], row_saturated[warp][lane],
                   outputs, retire, multiplicity, retired, staged + lo);
        __syncwarp();
    }
    publish_rows(tally, staged + lo, active_out, history + 4 * (layer_index + 1));
}
