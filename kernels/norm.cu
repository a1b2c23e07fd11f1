// Normalisation and softmax kernels, templates over the storage type
// (common.cuh) with float32 statistics. One block per normalised group or
// row; statistics in two passes (mean, then squared deviations) as the CPU
// reference does.
#include "common.cuh"

// ldv loads V consecutive elements (V = 1, or VEC(T) from a 16-byte
// aligned address) as floats.
template <typename T, int V>
__device__ __forceinline__ void ldv(const T* p, float* f) {
    if constexpr (V == 1) {
        f[0] = to_f(p[0]);
    } else {
        ld16(p, f);
    }
}

// block_range_stats gives every thread of the block the mean and the sum of
// squared deviations of xs[a:b] (two passes, as the CPU reference), reading
// V elements per access (b - a a multiple of V). sh holds 32 floats.
template <typename T, int V>
__device__ __forceinline__ void block_range_stats(const T* xs, int a, int b, float* sh, float& mean, float& m2) {
    float f[V];
    float s = 0.f;
    for (int i = a + threadIdx.x * V; i < b; i += blockDim.x * V) {
        ldv<T, V>(xs + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) s += f[k];
    }
    const float total = block_sum(s, sh);
    mean = b > a ? total / (float)(b - a) : 0.f;
    float q = 0.f;
    for (int i = a + threadIdx.x * V; i < b; i += blockDim.x * V) {
        ldv<T, V>(xs + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) q += (f[k] - mean) * (f[k] - mean);
    }
    m2 = block_sum(q, sh);
}

// groupnorm_write_part stores a chunk's (count, mean, M2) for
// groupnorm_combine (thread 0).
__device__ __forceinline__ void groupnorm_write_part(float* part, int splits, int cnt, float mean, float m2) {
    if (threadIdx.x == 0) {
        float* p = part + ((size_t)blockIdx.x * splits + blockIdx.y) * 3;
        p[0] = (float)cnt;
        p[1] = mean;
        p[2] = m2;
    }
}

// groupnorm: block b normalises group b%groups of image b/groups of
// x [N, C, spatial]; gamma/beta may be null; silu fuses a SiLU.
template <typename T>
__device__ __forceinline__ void groupnorm_impl(const T* x, T* y, const T* __restrict__ gamma, const T* __restrict__ beta,
                                               int C, int groups, int spatial, float eps, int silu) {
    __shared__ float sh[32];
    int g = blockIdx.x % groups;
    int cpg = C / groups;
    int len = cpg * spatial;
    size_t base = (size_t)blockIdx.x * len;
    const T* xs = x + base;
    T* ys = y + base;
    float mean, m2;
    block_range_stats<T, 1>(xs, 0, len, sh, mean, m2);
    const float inv = 1.f / sqrtf(m2 / (float)len + eps);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        int ch = g * cpg + i / spatial;
        float v = (to_f(xs[i]) - mean) * inv;
        if (gamma) v *= to_f(gamma[ch]);
        if (beta) v += to_f(beta[ch]);
        if (silu) v = v / (1.f + expf(-v));
        ys[i] = from_f<T>(v);
    }
}

// groupnorm_vec is groupnorm moving 16 bytes per access: spatial must be a
// multiple of VEC(T) (a vector stays in one channel) and x, y 16-byte
// aligned.
template <typename T>
__device__ __forceinline__ void groupnorm_vec_impl(const T* x, T* y, const T* __restrict__ gamma,
                                                   const T* __restrict__ beta, int C, int groups, int spatial, float eps,
                                                   int silu) {
    constexpr int V = VEC(T);
    __shared__ float sh[32];
    const int g = blockIdx.x % groups;
    const int cpg = C / groups;
    const int len = cpg * spatial;
    const size_t base = (size_t)blockIdx.x * len;
    const T* xs = x + base;
    T* ys = y + base;
    float mean, m2;
    block_range_stats<T, V>(xs, 0, len, sh, mean, m2);
    const float inv = 1.f / sqrtf(m2 / (float)len + eps);
    float f[V];
    for (int i = threadIdx.x * V; i < len; i += blockDim.x * V) {
        const int ch = g * cpg + i / spatial;
        const float ga = gamma ? to_f(gamma[ch]) : 1.f, be = beta ? to_f(beta[ch]) : 0.f;
        ld16(xs + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float v = (f[k] - mean) * inv * ga + be;
            if (silu) v = v / (1.f + expf(-v));
            f[k] = v;
        }
        st16(ys + i, f);
    }
}

// Split GroupNorm for groups too few to fill the GPU (the SD VAE at 512²
// has 32 groups of 131,072 elements): groupnorm_stats reduces chunk
// blockIdx.y of group blockIdx.x to (count, mean, sum of squared
// deviations) in part; groupnorm_apply combines a group's partials (Chan's
// parallel formula, as stable as the two-pass statistics) and normalises
// its chunk.
template <typename T>
__device__ __forceinline__ void groupnorm_stats_impl(const T* x, float* part, int len, int splits) {
    __shared__ float sh[32];
    const int chunk = (len + splits - 1) / splits;
    const int a = min(len, blockIdx.y * chunk), b = min(len, a + chunk);
    float mean, m2;
    block_range_stats<T, 1>(x + (size_t)blockIdx.x * len, a, b, sh, mean, m2);
    groupnorm_write_part(part, splits, b - a, mean, m2);
}

// groupnorm_vec_chunk is the chunk length of the vector split kernels: a
// multiple of VEC(T), so chunks start on 16-byte boundaries (len must be a
// multiple of VEC(T) too; the last chunks may be short or empty).
template <typename T>
__device__ __forceinline__ int groupnorm_vec_chunk(int len, int splits) {
    const int c = (len + splits - 1) / splits;
    return (c + VEC(T) - 1) / VEC(T) * VEC(T);
}

template <typename T>
__device__ __forceinline__ void groupnorm_stats_vec_impl(const T* x, float* part, int len, int splits) {
    __shared__ float sh[32];
    const int chunk = groupnorm_vec_chunk<T>(len, splits);
    const int a = min(len, blockIdx.y * chunk), b = min(len, a + chunk);
    float mean, m2;
    block_range_stats<T, VEC(T)>(x + (size_t)blockIdx.x * len, a, b, sh, mean, m2);
    groupnorm_write_part(part, splits, b - a, mean, m2);
}

// groupnorm_combine combines the partials of group blockIdx.x into the mean
// and inverse deviation in stat (thread 0; the block then syncs).
__device__ __forceinline__ void groupnorm_combine(const float* __restrict__ part, int splits, float eps, float* stat) {
    if (threadIdx.x == 0) {
        float n = 0.f, mean = 0.f, m2 = 0.f;
        const float* p = part + (size_t)blockIdx.x * splits * 3;
        for (int k = 0; k < splits; k++) {
            const float nb = p[3 * k], mb = p[3 * k + 1], qb = p[3 * k + 2];
            if (nb == 0.f) continue;
            const float nn = n + nb, d = mb - mean;
            mean += d * nb / nn;
            m2 += qb + d * d * n * nb / nn;
            n = nn;
        }
        stat[0] = mean;
        stat[1] = 1.f / sqrtf(m2 / n + eps);
    }
    __syncthreads();
}

template <typename T>
__device__ __forceinline__ void groupnorm_apply_vec_impl(const T* x, T* y, const T* __restrict__ gamma,
                                                         const T* __restrict__ beta, const float* __restrict__ part, int C,
                                                         int groups, int spatial, int splits, float eps, int silu) {
    constexpr int V = VEC(T);
    __shared__ float stat[2];
    groupnorm_combine(part, splits, eps, stat);
    const float mean = stat[0], inv = stat[1];
    const int g = blockIdx.x % groups;
    const int cpg = C / groups;
    const int len = cpg * spatial;
    const int chunk = groupnorm_vec_chunk<T>(len, splits);
    const int a = min(len, blockIdx.y * chunk), b = min(len, a + chunk);
    const size_t base = (size_t)blockIdx.x * len;
    float f[V];
    for (int i = a + threadIdx.x * V; i < b; i += blockDim.x * V) {
        const int ch = g * cpg + i / spatial;
        const float ga = gamma ? to_f(gamma[ch]) : 1.f, be = beta ? to_f(beta[ch]) : 0.f;
        ld16(x + base + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float v = (f[k] - mean) * inv * ga + be;
            if (silu) v = v / (1.f + expf(-v));
            f[k] = v;
        }
        st16(y + base + i, f);
    }
}

template <typename T>
__device__ __forceinline__ void groupnorm_apply_impl(const T* x, T* y, const T* __restrict__ gamma, const T* __restrict__ beta,
                                                     const float* __restrict__ part, int C, int groups, int spatial,
                                                     int splits, float eps, int silu) {
    __shared__ float stat[2];
    groupnorm_combine(part, splits, eps, stat);
    const int g = blockIdx.x % groups;
    const int cpg = C / groups;
    const int len = cpg * spatial;
    const float mean = stat[0], inv = stat[1];
    const int chunk = (len + splits - 1) / splits;
    const int a = blockIdx.y * chunk, b = min(len, a + chunk);
    const size_t base = (size_t)blockIdx.x * len;
    for (int i = a + threadIdx.x; i < b; i += blockDim.x) {
        const int ch = g * cpg + i / spatial;
        float v = (to_f(x[base + i]) - mean) * inv;
        if (gamma) v *= to_f(gamma[ch]);
        if (beta) v += to_f(beta[ch]);
        if (silu) v = v / (1.f + expf(-v));
        y[base + i] = from_f<T>(v);
    }
}

// layernorm normalises each row of x [rows, dim]; gamma/beta may be null.
template <typename T>
__device__ __forceinline__ void layernorm_impl(const T* x, T* y, const T* __restrict__ gamma, const T* __restrict__ beta,
                                               int dim, float eps) {
    __shared__ float sh[32];
    const T* xs = x + (size_t)blockIdx.x * dim;
    T* ys = y + (size_t)blockIdx.x * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += to_f(xs[i]);
    float mean = block_sum(s, sh) / (float)dim;
    float q = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = to_f(xs[i]) - mean;
        q += d * d;
    }
    float inv = 1.f / sqrtf(block_sum(q, sh) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = (to_f(xs[i]) - mean) * inv;
        if (gamma) v *= to_f(gamma[i]);
        if (beta) v += to_f(beta[i]);
        ys[i] = from_f<T>(v);
    }
}

// rmsnorm scales each row of x [rows, dim] by the reciprocal root mean
// square of its values (no mean subtraction, no bias), accumulated in
// float32, then by weight (may be null): T5LayerNorm, Flux/SD3/Qwen
// RMSNorm. y may alias x.
template <typename T>
__device__ __forceinline__ void rmsnorm_impl(const T* x, T* y, const T* __restrict__ weight, int dim, float eps) {
    __shared__ float sh[32];
    const T* xs = x + (size_t)blockIdx.x * dim;
    T* ys = y + (size_t)blockIdx.x * dim;
    float q = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = to_f(xs[i]);
        q += v * v;
    }
    float inv = 1.f / sqrtf(block_sum(q, sh) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = to_f(xs[i]) * inv;
        if (weight) v *= to_f(weight[i]);
        ys[i] = from_f<T>(v);
    }
}

// softmax applies a softmax to each row of x [rows, dim]; a row of only
// -inf becomes zeros, as on the CPU. y may alias x.
template <typename T>
__device__ __forceinline__ void softmax_impl(const T* x, T* y, int dim) {
    __shared__ float sh[32];
    const T* xs = x + (size_t)blockIdx.x * dim;
    T* ys = y + (size_t)blockIdx.x * dim;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) m = fmaxf(m, to_f(xs[i]));
    m = block_max(m, sh);
    if (m == -INFINITY) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ys[i] = from_f<T>(0.f);
        return;
    }
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += expf(to_f(xs[i]) - m);
    float inv = 1.f / block_sum(s, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ys[i] = from_f<T>(expf(to_f(xs[i]) - m) * inv);
}

#define NORM(S, T)                                                                                              \
    extern "C" __global__ void groupnorm_##S(const T* x, T* y, const T* gamma, const T* beta, int C, int groups, \
                                             int spatial, float eps, int silu) {                                 \
        groupnorm_impl<T>(x, y, gamma, beta, C, groups, spatial, eps, silu);                                     \
    }                                                                                                           \
    extern "C" __global__ void layernorm_##S(const T* x, T* y, const T* gamma, const T* beta, int dim, float eps) { \
        layernorm_impl<T>(x, y, gamma, beta, dim, eps);                                                          \
    }                                                                                                           \
    extern "C" __global__ void softmax_##S(const T* x, T* y, int dim) { softmax_impl<T>(x, y, dim); }           \
    extern "C" __global__ void rmsnorm_##S(const T* x, T* y, const T* weight, int dim, float eps) {           \
        rmsnorm_impl<T>(x, y, weight, dim, eps);                                                                \
    }                                                                                                           \
    extern "C" __global__ void groupnorm_stats_##S(const T* x, float* part, int len, int splits) {              \
        groupnorm_stats_impl<T>(x, part, len, splits);                                                          \
    }                                                                                                           \
    extern "C" __global__ void groupnorm_vec_##S(const T* x, T* y, const T* gamma, const T* beta, int C, int groups, \
                                                 int spatial, float eps, int silu) {                              \
        groupnorm_vec_impl<T>(x, y, gamma, beta, C, groups, spatial, eps, silu);                                 \
    }                                                                                                           \
    extern "C" __global__ void groupnorm_stats_vec_##S(const T* x, float* part, int len, int splits) {          \
        groupnorm_stats_vec_impl<T>(x, part, len, splits);                                                      \
    }                                                                                                           \
    extern "C" __global__ void groupnorm_apply_vec_##S(const T* x, T* y, const T* gamma, const T* beta,         \
                                                       const float* part, int C, int groups, int spatial,       \
                                                       int splits, float eps, int silu) {                       \
        groupnorm_apply_vec_impl<T>(x, y, gamma, beta, part, C, groups, spatial, splits, eps, silu);             \
    }                                                                                                           \
    extern "C" __global__ void groupnorm_apply_##S(const T* x, T* y, const T* gamma, const T* beta,             \
                                                   const float* part, int C, int groups, int spatial, int splits, \
                                                   float eps, int silu) {                                        \
        groupnorm_apply_impl<T>(x, y, gamma, beta, part, C, groups, spatial, splits, eps, silu);                 \
    }

FOR_EACH_TYPE(NORM)
