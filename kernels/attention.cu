// Flash-style multi-head attention. The score matrix is never stored.
//
// attention_<t>_d<N>: a portable kernel for every storage type and head
// dimensions up to 256, on CUDA cores in float32. The score matrix is never
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
template <typename T, int DPL>
__device__ __forceinline__ void attention_impl(const T* __restrict__ q, const T* __restrict__ k,
                                               const T* __restrict__ v, T* __restrict__ o,
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
    const T* qb = q + (size_t)b * Nq * HD + (size_t)h * D;
    const T* kb = k + (size_t)b * Nk * HD + (size_t)h * D;
    const T* vb = v + (size_t)b * Nk * HD + (size_t)h * D;
    const bool active = row < Nq;

    for (int d = lane; d < D; d += 32) Qs[warp * D + d] = active ? to_f(qb[(size_t)row * HD + d]) : 0.f;

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
                kv = to_f(kb[(size_t)kj * HD + d]);
                vv = to_f(vb[(size_t)kj * HD + d]);
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
    T* orow = o + (size_t)b * Nq * HD + (size_t)row * HD + (size_t)h * D;
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        int d = lane + 32 * i;
        if (d < D) orow[d] = from_f<T>(acc[i] * inv);
    }
}

#define ATTENTION_VARIANT(S, T, N, DPL)                                                                 \
    extern "C" __global__ void __launch_bounds__(ATT_ROWS * 32)                                          \
        attention_##S##_d##N(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, int D,    \
                             float scale, int causal) {                                                  \
        attention_impl<T, DPL>(q, k, v, o, Nq, Nk, H, D, scale, causal);                                 \
    }
#define ATTENTION_VARIANTS(S, T) \
    ATTENTION_VARIANT(S, T, 32, 1) ATTENTION_VARIANT(S, T, 64, 2) ATTENTION_VARIANT(S, T, 128, 4) ATTENTION_VARIANT(S, T, 256, 8)

FOR_EACH_TYPE(ATTENTION_VARIANTS)

// ---------------------------------------------------------------------------
// flash<W>_<t>_d<DP>: the tensor-core kernel for 16-bit storage
// (FlashAttention-2 structure on mma.sync.m16n8k16 with float32
// accumulators). A block of W warps owns 16·W query rows (16 per warp, kept
// as A fragments in registers); it streams keys in tiles of FA_BK through
// shared memory, two stages deep: while the warps compute on one tile,
// cp.async copies the next one (16-byte copies; when D is not a multiple of
// 8 or a pointer is not 16-byte aligned, `vec` is 0 and the tiles are copied
// with 4-byte loads). K and V tiles are row-major with padded rows
// (conflict-free ldmatrix reads); K's B fragments come from ldmatrix, V's
// from ldmatrix.trans, so neither is transposed. Each warp computes its
// 16 x FA_BK score tile in registers, updates the running row maxima and
// sums (online softmax, base 2, the scale folded into the exponent's FMA;
// masks only on the tiles that need them), turns the scores into the A
// fragments of P·V without leaving registers and accumulates O in
// registers. DP is the head dimension padded to a multiple of 16 (padding
// reads as zeros); D must be even. W is 4 (flash_) or 8 (flash8_): eight
// warps share each K/V tile between twice the rows, which wins where the
// tiles' loads bound the kernel. The tiles take flash_smem_bytes(DP) of
// dynamic shared memory.

#define FA_BK 64

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1, __half) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, unsigned b0, unsigned b1, __nv_bfloat16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// pack2 rounds two floats into one register of two 16-bit values (lo in the
// low half, as mma fragments expect).
__device__ __forceinline__ unsigned pack2(float lo, float hi, __half) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

__device__ __forceinline__ unsigned pack2(float lo, float hi, __nv_bfloat16) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
}

__device__ __forceinline__ unsigned smem_addr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// ldsm_x4_trans loads four 8x8 16-bit matrices transposed: lane l gives the
// address of row l%8 of matrix l/8, and r[i] gets matrix i's elements
// (2t, g) and (2t+1, g).
__device__ __forceinline__ void ldsm_x4_trans(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// ldsm_x4 loads four 8x8 16-bit matrices: lane l gives the address of row
// l%8 of matrix l/8, and r[i] gets matrix i's elements (g, 2t) and
// (g, 2t+1). ldsm_x2 loads two (lanes 0-15 give the addresses).
__device__ __forceinline__ void ldsm_x4(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm_x2(unsigned* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_addr(p))
                 : "memory");
}

// cp_async16 copies 16 bytes from global to shared memory asynchronously,
// or writes 16 zero bytes when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// flash_tile_load copies keys k0.. k0+FA_BK of K and V (head h) into one
// stage of the shared tiles; missing keys and padded columns read as zero.
template <typename T, int DP, int W>
__device__ __forceinline__ void flash_tile_load(T* Ks, T* Vs, const T* kb, const T* vb, int k0, int Nk, int D,
                                                size_t HD, int vec) {
    constexpr int ST = DP + 8;
    if (vec) {
        for (int idx = threadIdx.x; idx < FA_BK * (DP / 8); idx += W * 32) {
            const int j = idx / (DP / 8), c = (idx - j * (DP / 8)) * 8;
            const int kj = k0 + j;
            const bool ok = kj < Nk && c < D;
            const size_t off = ok ? (size_t)kj * HD + c : 0;
            cp_async16(Ks + j * ST + c, kb + off, ok);
            cp_async16(Vs + j * ST + c, vb + off, ok);
        }
    } else {
        for (int idx = threadIdx.x; idx < FA_BK * (DP / 2); idx += W * 32) {
            const int j = idx / (DP / 2), c = (idx - j * (DP / 2)) * 2;
            const int kj = k0 + j;
            unsigned kv = 0, vv = 0;
            if (kj < Nk && c < D) {
                kv = *reinterpret_cast<const unsigned*>(kb + (size_t)kj * HD + c);
                vv = *reinterpret_cast<const unsigned*>(vb + (size_t)kj * HD + c);
            }
            *reinterpret_cast<unsigned*>(Ks + j * ST + c) = kv;
            *reinterpret_cast<unsigned*>(Vs + j * ST + c) = vv;
        }
    }
}

template <typename T, int DP, int W>
__device__ __forceinline__ void flash_impl(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                           T* __restrict__ o, int Nq, int Nk, int H, int D, float scale, int causal,
                                           int vec) {
    constexpr int ST = DP + 8;  // tile row stride (elements): conflict-free ldmatrix rows, 16-byte aligned
    constexpr int TILE = FA_BK * ST;
    constexpr int BQ = 16 * W;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    T* Ks = reinterpret_cast<T*>(fa_smem);  // [2][FA_BK][ST]
    T* Vs = Ks + 2 * TILE;                  // [2][FA_BK][ST]
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int b = blockIdx.z, h = blockIdx.y;
    const int q0 = blockIdx.x * BQ + warp * 16;
    const size_t HD = (size_t)H * D;
    const T* qb = q + (size_t)b * Nq * HD + (size_t)h * D;
    const T* kb = k + (size_t)b * Nk * HD + (size_t)h * D;
    const T* vb = v + (size_t)b * Nk * HD + (size_t)h * D;
    const float sl2 = scale * 1.4426950408889634f;  // scores in base 2
    const T tag = from_f<T>(0.f);

    int kend = Nk;
    if (causal) kend = min(Nk, (int)(blockIdx.x + 1) * BQ);
    const int tiles = (kend + FA_BK - 1) / FA_BK;
    if (tiles > 0) flash_tile_load<T, DP, W>(Ks, Vs, kb, vb, 0, Nk, D, HD, vec);
    cp_async_commit();

    // A fragments of this warp's 16 query rows.
    unsigned qa[DP / 16][4];
#pragma unroll
    for (int kk = 0; kk < DP / 16; kk++) {
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int row = q0 + g + 8 * (r & 1);
            const int col = kk * 16 + 2 * t + 8 * (r >> 1);
            unsigned val = 0;
            if (row < Nq && col < D) val = *reinterpret_cast<const unsigned*>(qb + (size_t)row * HD + col);
            qa[kk][r] = val;
        }
    }
    float acc[DP / 8][4];
#pragma unroll
    for (int i = 0; i < DP / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    // Running maxima in base-2 units (scale applied), and sums.
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.f, l1 = 0.f;
    // ldmatrix row of this lane: matrix lane/8, row lane%8. For V (trans):
    // matrix lane/8 is keys +8 when odd, columns +8 from the second pair.
    // For K: keys lane%8 of the 8-key group, columns +8 per matrix.
    const int lm = lane >> 3, lr = lane & 7;
    const int vrow = (lm & 1) * 8 + lr, vcol = (lm >> 1) * 8;
    const int kcol = lm * 8;

    for (int tile = 0; tile < tiles; tile++) {
        const int k0 = tile * FA_BK;
        if (tile + 1 < tiles) {
            const int nx = (tile + 1) & 1;
            flash_tile_load<T, DP, W>(Ks + nx * TILE, Vs + nx * TILE, kb, vb, k0 + FA_BK, Nk, D, HD, vec);
        }
        cp_async_commit();
        cp_async_wait<1>();  // this tile's copies are done (the next may be in flight)
        __syncthreads();
        const T* Kt = Ks + (tile & 1) * TILE;
        const T* Vt = Vs + (tile & 1) * TILE;
        if (q0 < Nq) {  // warp-uniform: a warp without rows only helps load
            float s[FA_BK / 8][4];
#pragma unroll
            for (int nt = 0; nt < FA_BK / 8; nt++) {
                s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
                const T* kr = Kt + (nt * 8 + lr) * ST + kcol;
#pragma unroll
                for (int kk = 0; kk + 1 < DP / 16; kk += 2) {
                    unsigned kf[4];
                    ldsm_x4(kf, kr + kk * 16);
                    mma16816(s[nt], qa[kk], kf[0], kf[1], tag);
                    mma16816(s[nt], qa[kk + 1], kf[2], kf[3], tag);
                }
                if constexpr ((DP / 16) % 2 == 1) {
                    unsigned kf[2];
                    ldsm_x2(kf, Kt + (nt * 8 + lr) * ST + (DP - 16) + (lm & 1) * 8);
                    mma16816(s[nt], qa[DP / 16 - 1], kf[0], kf[1], tag);
                }
            }
            // Masks: keys past Nk, and the causal diagonal; only tiles
            // that reach either pay for them (warp-uniform test).
            if (k0 + FA_BK > Nk || (causal && k0 + FA_BK - 1 > q0)) {
#pragma unroll
                for (int nt = 0; nt < FA_BK / 8; nt++) {
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const int key = k0 + nt * 8 + 2 * t + (i & 1);
                        const int row = q0 + g + 8 * (i >> 1);
                        if (key >= Nk || (causal && key > row)) s[nt][i] = -INFINITY;
                    }
                }
            }
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < FA_BK / 8; nt++) {
                mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
                mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
            }
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
            mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
            mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
            // The scale is positive, so the maximum of the raw scores
            // scaled is the maximum of the scaled scores.
            const float mn0 = fmaxf(m0, mx0 * sl2), mn1 = fmaxf(m1, mx1 * sl2);
            // A row with no valid key so far keeps a zero reference so that
            // exp2(-inf - ref) is 0, never NaN.
            const float r0 = mn0 == -INFINITY ? 0.f : mn0, r1 = mn1 == -INFINITY ? 0.f : mn1;
            const float c0 = exp2f(m0 - r0), c1 = exp2f(m1 - r1);
            m0 = mn0;
            m1 = mn1;
            float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
            for (int nt = 0; nt < FA_BK / 8; nt++) {
                s[nt][0] = exp2f(fmaf(s[nt][0], sl2, -r0));
                s[nt][1] = exp2f(fmaf(s[nt][1], sl2, -r0));
                s[nt][2] = exp2f(fmaf(s[nt][2], sl2, -r1));
                s[nt][3] = exp2f(fmaf(s[nt][3], sl2, -r1));
                ps0 += s[nt][0] + s[nt][1];
                ps1 += s[nt][2] + s[nt][3];
            }
            // Partial sums per lane: the four lanes of a row add up at the end.
            l0 = l0 * c0 + ps0;
            l1 = l1 * c1 + ps1;
#pragma unroll
            for (int i = 0; i < DP / 8; i++) {
                acc[i][0] *= c0;
                acc[i][1] *= c0;
                acc[i][2] *= c1;
                acc[i][3] *= c1;
            }
#pragma unroll
            for (int kc = 0; kc < FA_BK / 16; kc++) {
                unsigned pa[4];
                pa[0] = pack2(s[2 * kc][0], s[2 * kc][1], tag);
                pa[1] = pack2(s[2 * kc][2], s[2 * kc][3], tag);
                pa[2] = pack2(s[2 * kc + 1][0], s[2 * kc + 1][1], tag);
                pa[3] = pack2(s[2 * kc + 1][2], s[2 * kc + 1][3], tag);
#pragma unroll
                for (int nt = 0; nt < DP / 8; nt += 2) {
                    unsigned vbf[4];
                    ldsm_x4_trans(vbf, Vt + (kc * 16 + vrow) * ST + nt * 8 + vcol);
                    mma16816(acc[nt], pa, vbf[0], vbf[1], tag);
                    mma16816(acc[nt + 1], pa, vbf[2], vbf[3], tag);
                }
            }
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    if (q0 >= Nq) return;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
    T* ob = o + (size_t)b * Nq * HD + (size_t)h * D;
    const int ra = q0 + g, rb = q0 + g + 8;
#pragma unroll
    for (int nt = 0; nt < DP / 8; nt++) {
        const int col = nt * 8 + 2 * t;
        if (col >= D) continue;
        if (ra < Nq) *reinterpret_cast<unsigned*>(ob + (size_t)ra * HD + col) = pack2(acc[nt][0] * i0, acc[nt][1] * i0, tag);
        if (rb < Nq) *reinterpret_cast<unsigned*>(ob + (size_t)rb * HD + col) = pack2(acc[nt][2] * i1, acc[nt][3] * i1, tag);
    }
}

#define FLASH_VARIANT(P, W, S, T, DP)                                                                      \
    extern "C" __global__ void __launch_bounds__(W * 32)                                                   \
        P##_##S##_d##DP(const T* q, const T* k, const T* v, T* o, int Nq, int Nk, int H, int D,            \
                        float scale, int causal, int vec) {                                                \
        flash_impl<T, DP, W>(q, k, v, o, Nq, Nk, H, D, scale, causal, vec);                                \
    }
#define FLASH_WIDTHS(P, W, S, T)                                                                           \
    FLASH_VARIANT(P, W, S, T, 32) FLASH_VARIANT(P, W, S, T, 48) FLASH_VARIANT(P, W, S, T, 64)              \
    FLASH_VARIANT(P, W, S, T, 80) FLASH_VARIANT(P, W, S, T, 96) FLASH_VARIANT(P, W, S, T, 128)             \
    FLASH_VARIANT(P, W, S, T, 160)
#define FLASH_VARIANTS(S, T) FLASH_WIDTHS(flash, 4, S, T) FLASH_WIDTHS(flash8, 8, S, T)

FLASH_VARIANTS(f16, __half)
FLASH_VARIANTS(bf16, __nv_bfloat16)
