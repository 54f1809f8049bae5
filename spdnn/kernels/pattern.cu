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
// a time. It cuts them into groups of UNROLL rows (the last ones fewer, halving); a step
// is 32 x VEC outputs of a group, VEC consecutive ones a lane, and the warps share the
// chunk's (group, step) pairs out evenly, each warp a run of them in group order. A
// thread carries UNROLL vectors in flight: along each row of its group, UNROLL / rows
// steps each, so the index loads of a step serve every row of the group and a lone row
// still keeps UNROLL vectors in flight. With VEC = 4 a lane writes its outputs 4 at once
// and reads 4 consecutive, aligned inputs with one 16-byte load. SHIFTED (VEC = 4, two
// sources) is RadiX-Net's case, layout.py's `shift`: output d reads inputs d and
// (d + shift) mod inputs, the smaller one first; the lane then computes its sources
// instead of loading them, so its input loads wait on nothing. Threads count their
// non-zero and YMAX outputs in registers; a warp adds them up once per run of a group
// into the block's per-row counters. Needs outputs a multiple of 32 x VEC, and inputs of
// VEC. Built at run time by CuPy (NVRTC) with -D options; the defaults below let
// `nvcc -c` compile this file alone.

#include "rotation.cuh"
#include "rows_fate.cuh"

#ifndef PATTERN
#define PATTERN "0101"       // which distinct input each stored entry reads, in order
#define UNIQUE 2
#endif
#define WIDTH ((int)sizeof(PATTERN) - 1)
#ifndef THREADS
#define THREADS 512
#endif
#ifndef VEC
#define VEC 1                // consecutive outputs of a lane: 1 or 4
#endif
#if VEC == 4
#define LOG_UNROLL 1         // vectors a thread has in flight: rows go 2, 1 at once
#elif VEC == 1
#define LOG_UNROLL 2         // rows go 4, 2, 1 at once
#else
#error "VEC is 1 or 4"
#endif
#ifndef SHIFTED
#define SHIFTED 0            // sources computed from the layer's shift (VEC 4, UNIQUE 2)
#endif
#if SHIFTED && (VEC != 4 || UNIQUE != 2)
#error "SHIFTED needs VEC 4 and UNIQUE 2"
#endif
#define UNROLL (1 << LOG_UNROLL)
#define STEP (32 * VEC)      // outputs of a step: VEC a lane
#define WARPS (THREADS / 32)
#define CHUNK 256            // rows a block counts at a time

__device__ __forceinline__ constexpr int order(int k) { return PATTERN[k] - '0'; }

// VEC sources of a lane: the inputs of its VEC consecutive outputs.
struct Sources {
    int at[VEC];
};

__device__ __forceinline__ Sources load_sources(const int* __restrict__ from) {
    Sources s;
#if VEC == 4
    const int4 v = __ldg(reinterpret_cast<const int4*>(from));
    s.at[0] = v.x, s.at[1] = v.y, s.at[2] = v.z, s.at[3] = v.w;
#else
    s.at[0] = __ldg(from);
#endif
    return s;
}

// The inputs row[s.at[0 .. VEC)]: one 16-byte load where they are 4 consecutive inputs
// starting at a multiple of 4, two 8-byte loads at a multiple of 2, else one by one.
__device__ __forceinline__ void gather(const float* __restrict__ row, const Sources& s,
                                       float* x) {
#if VEC == 4
    const bool run = s.at[1] == s.at[0] + 1 && s.at[2] == s.at[0] + 2 && s.at[3] == s.at[0] + 3;
    if (run && (s.at[0] & 3) == 0) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(row + s.at[0]));
        x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
    } else if (run && (s.at[0] & 1) == 0) {
        const float2 v = __ldg(reinterpret_cast<const float2*>(row + s.at[0]));
        const float2 w = __ldg(reinterpret_cast<const float2*>(row + s.at[0] + 2));
        x[0] = v.x, x[1] = v.y, x[2] = w.x, x[3] = w.y;
    } else {
#pragma unroll
        for (int v = 0; v < 4; ++v) x[v] = __ldg(row + s.at[v]);
    }
#else
    x[0] = __ldg(row + s.at[0]);
#endif
}

// Compute steps [begin, end) (STEP outputs a step) of the 2^SHIFT rows in slots[0 ...] and
// add their non-zero and YMAX outputs to the counts of rows `row` ... of the chunk.
template <int SHIFT>
__device__ __forceinline__ void pattern_rows(const float* __restrict__ y_in,
                                             float* __restrict__ y_out,
                                             const int* __restrict__ sources, int shift,
                                             int inputs, int outputs, float weight, float bias,
                                             float ymax, const int* slots, int begin, int end,
                                             int* counts, int row) {
    constexpr int TOGETHER = 1 << SHIFT, PER = UNROLL >> SHIFT;   // rows, steps at once
    const int lane = threadIdx.x % 32;
    const float* in[UNROLL];
    float* out[UNROLL];
    int nonzero[UNROLL], saturated[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {       // u: row u % TOGETHER, step u / TOGETHER
        const long long slot = slots[u % TOGETHER];
        in[u] = y_in + slot * inputs;
        out[u] = y_out + slot * outputs + (u / TOGETHER) * STEP + lane * VEC;
        nonzero[u] = saturated[u] = 0;
    }
    for (int step = begin; step < end; step += PER) {
        float x[UNROLL][UNIQUE][VEC];
#if SHIFTED
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)         // every load first, then the sums
            gather_rotated<true>(in[u], min(step + u / TOGETHER, end - 1) * STEP + lane * VEC,
                                 shift, inputs, x[u]);
#else
        Sources source[PER][UNIQUE];
#pragma unroll
        for (int p = 0; p < PER; ++p) {
            const int d = min(step + p, end - 1) * STEP + lane * VEC;
#pragma unroll
            for (int k = 0; k < UNIQUE; ++k) source[p][k] = load_sources(sources + k * outputs + d);
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u)         // every load first, then the sums
#pragma unroll
            for (int k = 0; k < UNIQUE; ++k) gather(in[u], source[u / TOGETHER][k], x[u][k]);
#endif
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            if (step + u / TOGETHER >= end) break;   // uniform over the warp
            float y[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
                float product[UNIQUE];
#pragma unroll
                for (int k = 0; k < UNIQUE; ++k) product[k] = mul_rn(x[u][k][v], weight);
                float acc = product[order(0)];
#pragma unroll
                for (int k = 1; k < WIDTH; ++k) acc = add_rn(acc, product[order(k)]);
                y[v] = activate(acc, bias, ymax);
                nonzero[u] += !is_zero(y[v]);
                saturated[u] += y[v] == ymax;
            }
#if VEC == 4
            *reinterpret_cast<float4*>(out[u] + step * STEP) = make_float4(y[0], y[1], y[2], y[3]);
#else
            out[u][step * STEP] = y[0];
#endif
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
    const int steps = outputs / STEP;
    const int shift = SHIFTED ? __ldg(sources + outputs) : 0;   // sources[1][0]
    for (int first = lo; first < hi; first += CHUNK) {
        const int rows = min(CHUNK, hi - first);
        __syncthreads();                      // the last chunk tallied
        for (int i = threadIdx.x; i < 2 * CHUNK; i += THREADS) counts[i] = 0;
        __syncthreads();
        // groups of UNROLL rows, then one of each power of two in the rest, largest first;
        // warp w takes the (group, step) pairs [work * w / WARPS, work * (w + 1) / WARPS)
        const int full = rows / UNROLL, rest = rows % UNROLL;
        const int work = (full + __popc(rest)) * steps;
        const int stop = (int)((long long)work * (warp + 1) / WARPS);
        for (int at = (int)((long long)work * warp / WARPS); at < stop;) {
            const int g = at / steps, begin = at - g * steps, end = min(steps, stop - g * steps);
            at = g * steps + end;
            int row = UNROLL * min(g, full), shift_rows = LOG_UNROLL;
            if (g >= full) {                  // the (g - full)-th set bit of rest, from the top
                int skip = g - full;
                for (shift_rows = LOG_UNROLL - 1; shift_rows > 0; --shift_rows) {
                    if (!(rest >> shift_rows & 1)) continue;
                    if (skip-- == 0) break;
                    row += 1 << shift_rows;
                }
            }
            const int* slots = active_in + first + row;
#if LOG_UNROLL == 2
            if (shift_rows == 2)
                pattern_rows<2>(y_in, y_out, sources, shift, inputs, outputs, weight, bias, ymax,
                                slots, begin, end, counts, row);
            else
#endif
            if (shift_rows == 1)
                pattern_rows<1>(y_in, y_out, sources, shift, inputs, outputs, weight, bias, ymax,
                                slots, begin, end, counts, row);
            else
                pattern_rows<0>(y_in, y_out, sources, shift, inputs, outputs, weight, bias, ymax,
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
