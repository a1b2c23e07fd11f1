// Flash-style multi-head attention (float32). The score matrix is never
// stored: each warp owns one query row and streams the keys in tiles of
// ATT_KT, keeping a running maximum m, a running sum l and the weighted
// value accumulator (online softmax). A block holds ATT_ROWS query rows
// (one warp each) that share the key and value tiles in shared memory.
//
// Layout: q [B, Nq, H*D], k and v [B, Nk, H*D], o [B, Nq, H*D].
#include "common.cuh"

#define ATT_ROWS 8
#define ATT_KT 32

// DPL is the number of head-dimension elements each lane accumulates
// (D <= 32*DPL); it is a template constant so acc stays in registers.
template <int DPL>
__device__ __forceinline__ void attention_impl(const float* __restrict__ q, const float* __restrict__ k,
                                               const float* __restrict__ v, float* __restrict__ o,
                                               int Nq, int Nk, int H, int D, float scale, int causal) {
    extern __shared__ float smem[];
    const int ld = D + 1;             // padded K rows: lane-strided reads avoid bank conflicts
    float* Ks = smem;                 // ATT_KT x ld
    float* Vs = Ks + ATT_KT * ld;     // ATT_KT x D
    float* Qs = Vs + ATT_KT * D;      // ATT_ROWS x D
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int b = blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int row = q0 + warp;
    const size_t HD = (size_t)H * D;
    const float* qb = q + (size_t)b * Nq * HD + (size_t)h * D;
    const float* kb = k + (size_t)b * Nk * HD + (size_t)h * D;
    const float* vb = v + (size_t)b * Nk * HD + (size_t)h * D;
    const bool active = row < Nq;

    for (int d = lane; d < D; d += 32) Qs[warp * D + d] = active ? qb[(size_t)row * HD + d] : 0.f;

    float m = -INFINITY, l = 0.f;
    float acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] = 0.f;

    int kend = Nk;
    if (causal) kend = min(Nk, q0 + ATT_ROWS);
    for (int k0 = 0; k0 < kend; k0 += ATT_KT) {
        __syncthreads();  // the previous tile is consumed; Qs is written
        for (int idx = threadIdx.x; idx < ATT_KT * D; idx += blockDim.x) {
            int j = idx / D, d = idx - j * D;
            int kj = k0 + j;
            float kv = 0.f, vv = 0.f;
            if (kj < Nk) {
                kv = kb[(size_t)kj * HD + d];
                vv = vb[(size_t)kj * HD + d];
            }
            Ks[j * ld + d] = kv;
            Vs[j * D + d] = vv;
        }
        __syncthreads();
        if (!active) continue;

        // Lane j scores key k0+j.
        const int kj = k0 + lane;
        const float* kr = Ks + lane * ld;
        const float* qr = Qs + warp * D;
        float s = 0.f;
        for (int d = 0; d < D; d++) s += qr[d] * kr[d];
        s *= scale;
        const bool valid = kj < Nk && !(causal && kj > row);
        if (!valid) s = -INFINITY;
        const float tmax = warp_max(s);
        if (tmax == -INFINITY) continue;  // warp-uniform: nothing to add
        const float mnew = fmaxf(m, tmax);
        const float corr = expf(m - mnew);
        const float p = valid ? expf(s - mnew) : 0.f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] *= corr;
        for (int j = 0; j < ATT_KT; j++) {
            const float pj = __shfl_sync(0xffffffffu, p, j);
            const float* vr = Vs + j * D;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) acc[i] += pj * vr[d];
            }
        }
        m = mnew;
    }
    if (!active) return;
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* orow = o + (size_t)b * Nq * HD + (size_t)row * HD + (size_t)h * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) orow[d] = acc[i] * inv;
    }
}

#define ATTENTION_VARIANT(NAME, DPL)                                                                   \
    extern "C" __global__ void __launch_bounds__(ATT_ROWS * 32)                                        \
        NAME(const float* q, const float* k, const float* v, float* o, int Nq, int Nk, int H, int D, \
             float scale, int causal) {                                                                \
        attention_impl<DPL>(q, k, v, o, Nq, Nk, H, D, scale, causal);                                  \
    }

ATTENTION_VARIANT(attention_f32_d32, 1)
ATTENTION_VARIANT(attention_f32_d64, 2)
ATTENTION_VARIANT(attention_f32_d128, 4)
ATTENTION_VARIANT(attention_f32_d256, 8)
