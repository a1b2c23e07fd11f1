// Normalisation and softmax kernels (float32). One block per normalised
// group or row; statistics in two passes (mean, then squared deviations)
// as the CPU reference does.
#include "common.cuh"

// groupnorm_f32: block b normalises group b%groups of image b/groups of
// x [N, C, spatial]; gamma/beta may be null; silu fuses a SiLU.
extern "C" __global__ void groupnorm_f32(const float* x, float* y,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         int C, int groups, int spatial, float eps, int silu) {
    __shared__ float sh[32];
    int g = blockIdx.x % groups;
    int cpg = C / groups;
    int len = cpg * spatial;
    size_t base = (size_t)blockIdx.x * len;
    const float* xs = x + base;
    float* ys = y + base;
    float s = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) s += xs[i];
    float mean = block_sum(s, sh) / (float)len;
    float q = 0.f;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        float d = xs[i] - mean;
        q += d * d;
    }
    float inv = 1.f / sqrtf(block_sum(q, sh) / (float)len + eps);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        int ch = g * cpg + i / spatial;
        float v = (xs[i] - mean) * inv;
        if (gamma) v *= gamma[ch];
        if (beta) v += beta[ch];
        if (silu) v = v / (1.f + expf(-v));
        ys[i] = v;
    }
}

// layernorm_f32 normalises each row of x [rows, dim]; gamma/beta may be null.
extern "C" __global__ void layernorm_f32(const float* x, float* y,
                                         const float* __restrict__ gamma, const float* __restrict__ beta,
                                         int dim, float eps) {
    __shared__ float sh[32];
    const float* xs = x + (size_t)blockIdx.x * dim;
    float* ys = y + (size_t)blockIdx.x * dim;
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += xs[i];
    float mean = block_sum(s, sh) / (float)dim;
    float q = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float d = xs[i] - mean;
        q += d * d;
    }
    float inv = 1.f / sqrtf(block_sum(q, sh) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = (xs[i] - mean) * inv;
        if (gamma) v *= gamma[i];
        if (beta) v += beta[i];
        ys[i] = v;
    }
}

// softmax_f32 applies a softmax to each row of x [rows, dim]; a row of
// only -inf becomes zeros, as on the CPU.
extern "C" __global__ void softmax_f32(const float* x, float* y, int dim) {
    __shared__ float sh[32];
    const float* xs = x + (size_t)blockIdx.x * dim;
    float* ys = y + (size_t)blockIdx.x * dim;
    float m = -INFINITY;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) m = fmaxf(m, xs[i]);
    m = block_max(m, sh);
    if (m == -INFINITY) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ys[i] = 0.f;
        return;
    }
    float s = 0.f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float e = expf(xs[i] - m);
        ys[i] = e;
        s += e;
    }
    float inv = 1.f / block_sum(s, sh);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ys[i] *= inv;
}
