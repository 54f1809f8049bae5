// One layer whose distinct columns all read a few inputs in one shared order (layout.py's
// `pattern`): output d of a row sums, in stored order, x[sources[pattern[k]][d]] * weight
// for k = 0 .. WIDTH-1. RadiX-Net's first block is such: every column reads two inputs,
// alternating, sixteen times each. Each distinct input is loaded and multiplied once; the
// WIDTH additions run in the stored order on registers, with the very same operands as
// layer.cu's, so results match it (and the CPU backend) bit for bit. (The sum starts from
// the first product rather than from 0 + it: the two differ only in the sign of a zero
// sum, which `activate` maps to 0 either way.) No shared-memory tile and no gathers from
// memory beyond the inputs themselves: a layer costs about its bytes and its additions.
//
// A block owns the active rows [lo, hi) (rows_fate.cuh) and takes up to CHUNK of them at
// a time. It cuts them into groups of 4 rows (the last ones 2 and 1) and, when there are
// fewer groups than warps to keep busy, each group's outputs into slices; the warps share
// out the (group, slice) units. A thread carries UNROLL outputs in flight: 32 apart along
// each row of its group, UNROLL / rows steps of 32 outputs each, so the index loads of a
// step serve every row of the group and a lone row still keeps UNROLL loads in flight.
// Threads count their non-zero and YMAX outputs in registers; a warp adds them up once per
// unit into the block's per-row counters. Needs outputs % 32 == 0. Built at run time by
// CuPy (NVRTC) with -D options; the defaults below let `nvcc -c` compile this file alone.

#include "rows_fate.cuh"

#ifndef PATTERN
#define PATTERN "0101"       // which distinct input each stored entry reads, in order
#define UNIQUE 2
#endif
#define WIDTH ((int)sizeof(PATTERN) - 1)
#ifndef THREADS
#define THREADS 512
#endif
#define UNROLL 4             // outputs a thread has in flight: rows go 4, 2, 1 at once
#define WARPS (THREADS / 32)
#define CHUNK 256            // rows a block counts at a time
#define UNITS_PER_WARP 4     // slice groups until there are about this many units a warp

__device__ __forceinline__ constexpr int order(int k) { return PATTERN[k] - '0'; }

// Compute steps [begin, end) (32 outputs a step) of the 2^SHIFT rows in slots[0 ...] and
// add their non-zero and YMAX outputs to the counts of rows `row` ... of the chunk.
template <int SHIFT>
__device__ __forceinline__ void pattern_rows(const float* __restrict__ y_in,
                                             float* __restrict__ y_out,
                                             const int* __restrict__ sources, int inputs,
                                             int outputs, float weight, float bias, float ymax,
                                             const int* slots, int begin, int end, int* counts,
                                             int row) {
    constexpr int TOGETHER = 1 << SHIFT, PER = UNROLL >> SHIFT;   // rows, steps at once
    const int lane = threadIdx.x % 32;
    const float* in[UNROLL];
    float* out[UNROLL];
    int nonzero[UNROLL], saturated[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {       // u: row u % TOGETHER, step u / TOGETHER
        const long long slot = slots[u % TOGETHER];
        in[u] = y_in + slot * inputs;
        out[u] = y_out + slot * outputs + (u / TOGETHER) * 32 + lane;
        nonzero[u] = saturated[u] = 0;
    }
    for (int step = begin; step < end; step += PER) {
        int source[PER][UNIQUE];
#pragma unroll
        for (int p = 0; p < PER; ++p) {
            const int d = min(step + p, end - 1) * 32 + lane;
#pragma unroll
            for (int k = 0; k < UNIQUE; ++k) source[p][k] = __ldg(sources + k * outputs + d);
        }
        float x[UNROLL][UNIQUE];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)         // every load first, then the sums
#pragma unroll
            for (int k = 0; k < UNIQUE; ++k) x[u][k] = __ldg(in[u] + source[u / TOGETHER][k]);
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (step + u / TOGETHER >= end) break;   // uniform over the warp
            float product[UNIQUE];
#pragma unroll
            for (int k = 0; k < UNIQUE; ++k) product[k] = __fmul_rn(x[u][k], weight);
            float acc = product[order(0)];
#pragma unroll
            for (int k = 1; k < WIDTH; ++k) acc = __fadd_rn(acc, product[order(k)]);
            const float y = activate(acc, bias, ymax);
            out[u][step * 32] = y;
            nonzero[u] += y > 0.0f;
            saturated[u] += y == ymax;
        }
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
        const int row_nonzero = warp_sum(nonzero[u]), row_saturated = warp_sum(saturated[u]);
        if (lane == 0) {
            atomicAdd(&counts[row + u % TOGETHER], row_nonzero);
            atomicAdd(&counts[CHUNK + row + u % TOGETHER], row_saturated);
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS, 1024 / THREADS)
pattern_layer(const float* __restrict__ y_in, float* __restrict__ y_out,
              const int* __restrict__ active_in, int* __restrict__ active_out,
              int* __restrict__ history, int layer_index, int* __restrict__ report,
              const int* __restrict__ multiplicity, unsigned char* __restrict__ retired,
              int* __restrict__ staged, const int* __restrict__ sources, int inputs,
              int outputs, float weight, float bias, float ymax,
              const int* __restrict__ retire_layer) {
    __shared__ RowTally tally;
    __shared__ int counts[2 * CHUNK];        // per row of the chunk: non-zero, then YMAX outputs

    const int* history_in = history + 4 * layer_index;
    const int retire = retire_layer[layer_index];   // may this layer retire all-YMAX rows
    const int n = history_in[0];
    if (report != nullptr && blockIdx.x == 0 && threadIdx.x == 0) report[layer_index] = n;
    int lo, hi;
    block_rows(n, lo, hi);
    start_tally(tally);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int steps = outputs / 32;
    for (int first = lo; first < hi; first += CHUNK) {
        const int rows = min(CHUNK, hi - first);
        __syncthreads();                      // the last chunk tallied
        for (int i = threadIdx.x; i < 2 * CHUNK; i += THREADS) counts[i] = 0;
        __syncthreads();
        const int fours = rows / 4, rest = rows % 4;
        const int groups = fours + (rest >= 2) + (rest % 2);
        const int slices = max(1, min((UNITS_PER_WARP * WARPS + groups - 1) / groups,
                                      steps / (2 * UNROLL)));
        for (int unit = warp; unit < groups * slices; unit += WARPS) {
            const int g = unit / slices, slice = unit % slices;
            const int begin = (int)((long long)steps * slice / slices);
            const int end = (int)((long long)steps * (slice + 1) / slices);
            const int row = g < fours ? 4 * g : g == fours && rest >= 2 ? 4 * fours : rows - 1;
            const int* slots = active_in + first + row;
            if (g < fours)
                pattern_rows<2>(y_in, y_out, sources, inputs, outputs, weight, bias, ymax,
                                slots, begin, end, counts, row);
            else if (g == fours && rest >= 2)
                pattern_rows<1>(y_in, y_out, sources, inputs, outputs, weight, bias, ymax,
                                slots, begin, end, counts, row);
            else
                pattern_rows<0>(y_in, y_out, sources, inputs, outputs, weight, bias, ymax,
                                slots, begin, end, counts, row);
        }
        __syncthreads();                      // every row of the chunk counted
        for (int r0 = warp * 32; r0 < rows; r0 += THREADS) {
            const int r = r0 + lane;
            const bool live = r < rows;
            account_rows(live, live ? active_in[first + r] : 0, live ? counts[r] : 0,
                         live ? counts[CHUNK + r] : 0, outputs, retire, multiplicity, retired,
                         tally.counts, staged + lo);
        }
    }
    publish_rows(tally, staged + lo, active_out, history + 4 * (layer_index + 1));
}
