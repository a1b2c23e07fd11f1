// Shared helpers for darkroom's CUDA kernels. Every kernel is extern "C"
// so the Go side finds it by its plain name (cuModuleGetFunction).
#pragma once

#include <math.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
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

// Storage types. Kernels are written once as templates over the storage
// type T (float, __half or __nv_bfloat16) and compute in float32; each is
// instantiated under the suffixes _f32, _f16 and _bf16 (the Go side picks
// the suffix of the device's precision).
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// FOR_EACH_TYPE(M) expands M(suffix, type) for the three storage types.
#define FOR_EACH_TYPE(M) M(f32, float) M(f16, __half) M(bf16, __nv_bfloat16)

// VEC(T) is how many elements of T fill one 16-byte access; ld16 and st16
// move that many between memory (16-byte aligned) and floats.
#define VEC(T) ((int)(16 / sizeof(T)))

template <typename T>
__device__ __forceinline__ void ld16(const T* p, float* f) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int k = 0; k < VEC(T); k++) f[k] = to_f(t[k]);
}

template <typename T>
__device__ __forceinline__ void st16(T* p, const float* f) {
    uint4 u;
    T* t = reinterpret_cast<T*>(&u);
#pragma unroll
    for (int k = 0; k < VEC(T); k++) t[k] = from_f<T>(f[k]);
    *reinterpret_cast<uint4*>(p) = u;
}
