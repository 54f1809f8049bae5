// The features on the GPU, the first layer's input: CSR rows (x_ptr, 64-bit offsets by
// slot) whose column indices x_col are as narrow as the network allows (16-bit when
// N <= 65536, as for every challenge network: half the bytes the first layer reads).
//
// Kernels include this file; spdnn/backends/cuda.py pastes it into their source (once)
// before NVRTC compiles them with FEATURE_INDEX_BYTES set, and nvcc finds it beside them.

#pragma once

#ifndef FEATURE_INDEX_BYTES
#define FEATURE_INDEX_BYTES 4
#endif
#if FEATURE_INDEX_BYTES == 2
typedef unsigned short feature_index;
#else
typedef int feature_index;
#endif
