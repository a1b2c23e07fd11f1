// Shared helpers for darkroom's CUDA kernels. Every kernel is extern "C"
// so the Go side finds it by its plain name (cuModuleGetFunction).
#pragma once

#include <math.h>
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

// MAXDIMS is the largest tensor rank the broadcasting and permute kernels
// accept; the Go side packs the same struct (engine/backend/cuda/launch.go).
#define MAXDIMS 6

// Dims describes an output shape and, for up to two sources, the element
// stride of each output dimension in that source (0 where it broadcasts).
struct Dims {
    int rank;
    int shape[MAXDIMS];
    int sa[MAXDIMS];
    int sb[MAXDIMS];
};

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// block_sum returns the sum of v over the block to every thread. blockDim.x
// must be a multiple of 32; sh holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    return warp_sum(v);
}

// block_max is block_sum's counterpart for the maximum.
__device__ __forceinline__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

#define GRID_STRIDE(i, n) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += gridDim.x * blockDim.x)
