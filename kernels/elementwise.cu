// Elementwise, broadcasting and data-movement kernels. Each is a template
// over the storage type T (common.cuh) computing in float32, instantiated
// as NAME_f32, NAME_f16 and NAME_bf16.
#include "common.cuh"

// Unary op codes match backend.UnaryOp.
__device__ __forceinline__ float unary_apply(int op, float x) {
    switch (op) {
    case 0: return x / (1.f + expf(-x));                                  // silu
    case 1: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));     // gelu (erf)
    case 2: {                                                             // gelu (tanh)
        float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.f + tanhf(u));
    }
    case 3: return x / (1.f + expf(-1.702f * x));                         // quick gelu
    case 4: return fmaxf(x, 0.f);                                         // relu
    case 5: return tanhf(x);
    case 6: return 1.f / (1.f + expf(-x));                                // sigmoid
    case 7: return expf(x);
    case 8: return -x;
    }
    return x;
}

// Binary op codes match backend.BinaryOp.
__device__ __forceinline__ float binary_apply(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    }
    return a;
}

template <typename T>
__device__ __forceinline__ void unary_impl(int op, int n, const T* x, T* y) {
    GRID_STRIDE(i, n) y[i] = from_f<T>(unary_apply(op, to_f(x[i])));
}

template <typename T>
__device__ __forceinline__ void affine_impl(int n, const T* x, T* y, float alpha, float beta) {
    GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(x[i]) * alpha + beta);
}

// clamp limits x to [lo, hi]; NaN stays NaN (as torch.clamp). y may alias x.
template <typename T>
__device__ __forceinline__ void clamp_impl(int n, const T* x, T* y, float lo, float hi) {
    GRID_STRIDE(i, n) {
        float v = to_f(x[i]);
        y[i] = from_f<T>(v < lo ? lo : (v > hi ? hi : v));
    }
}

// binary handles equal shapes; y may alias a or b.
template <typename T>
__device__ __forceinline__ void binary_impl(int op, int n, const T* a, const T* b, T* y) {
    GRID_STRIDE(i, n) y[i] = from_f<T>(binary_apply(op, to_f(a[i]), to_f(b[i])));
}

// binary_bcast broadcasts a and b to d.shape through the strides d.sa and d.sb.
template <typename T>
__device__ __forceinline__ void binary_bcast_impl(int op, int n, const T* a, const T* b, T* y, const Dims& d) {
    GRID_STRIDE(i, n) {
        int r = i, ia = 0, ib = 0;
        for (int k = d.rank - 1; k >= 0; k--) {
            int c = r % d.shape[k];
            r /= d.shape[k];
            ia += c * d.sa[k];
            ib += c * d.sb[k];
        }
        y[i] = from_f<T>(binary_apply(op, to_f(a[ia]), to_f(b[ib])));
    }
}

// binary_rows applies op between a full operand x [rows, cols] and a row
// operand r broadcast over blocks of rows: row i of x meets row
// (i / per) % groups of r ([B, N, D] with [B, 1, D]: per N, groups B;
// RoPE tables [L, hd] against [B, L, H, hd]: per H, groups L). swap puts r
// first (r op x). One block walks whole rows, so no element needs an
// index division; vec moves 16 bytes per access (cols a multiple of VEC(T),
// every row 16-byte aligned).
template <typename T>
__device__ __forceinline__ void binary_rows_impl(int op, int rows, int cols, int per, int groups, int swap, int vec,
                                                 const T* x, const T* r, T* y) {
    constexpr int V = VEC(T);
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const size_t off = (size_t)row * cols;
        const T* rr = r + (size_t)((row / per) % groups) * cols;
        if (vec) {
            for (int c = threadIdx.x * V; c < cols; c += blockDim.x * V) {
                float a[VEC(T)], b[VEC(T)];
                ld16(x + off + c, a);
                ld16(rr + c, b);
#pragma unroll
                for (int k = 0; k < V; k++) a[k] = swap ? binary_apply(op, b[k], a[k]) : binary_apply(op, a[k], b[k]);
                st16(y + off + c, a);
            }
        } else {
            for (int c = threadIdx.x; c < cols; c += blockDim.x) {
                const float a = to_f(x[off + c]), b = to_f(rr[c]);
                y[off + c] = from_f<T>(swap ? binary_apply(op, b, a) : binary_apply(op, a, b));
            }
        }
    }
}

// permute writes y (shape d.shape) from x read through the strides d.sa.
template <typename T>
__device__ __forceinline__ void permute_impl(int n, const T* __restrict__ x, T* __restrict__ y, const Dims& d) {
    GRID_STRIDE(i, n) {
        int r = i, ix = 0;
        for (int k = d.rank - 1; k >= 0; k--) {
            ix += (r % d.shape[k]) * d.sa[k];
            r /= d.shape[k];
        }
        y[i] = x[ix];
    }
}

// geglu computes a*gelu(g) for rows of x = [a | g], each half h wide.
template <typename T>
__device__ __forceinline__ void geglu_impl(int n, int h, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int r = i / h, c = i - r * h;
        float a = to_f(x[(size_t)r * 2 * h + c]), g = to_f(x[(size_t)r * 2 * h + h + c]);
        y[i] = from_f<T>(a * (0.5f * g * (1.f + erff(g * 0.70710678118654752f))));
    }
}

// geglu_vec is geglu moving 16 bytes per load and store: h must be a
// multiple of VEC(T) and x, y 16-byte aligned; n counts vectors of y.
template <typename T>
__device__ __forceinline__ void geglu_vec_impl(int n, int h, const T* __restrict__ x, T* __restrict__ y) {
    constexpr int V = VEC(T);
    GRID_STRIDE(i, n) {
        const int e = i * V, r = e / h, c = e - r * h;
        const uint4 av = *reinterpret_cast<const uint4*>(x + (size_t)r * 2 * h + c);
        const uint4 gv = *reinterpret_cast<const uint4*>(x + (size_t)r * 2 * h + h + c);
        const T* a = reinterpret_cast<const T*>(&av);
        const T* g = reinterpret_cast<const T*>(&gv);
        uint4 ov;
        T* o = reinterpret_cast<T*>(&ov);
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float gk = to_f(g[k]);
            o[k] = from_f<T>(to_f(a[k]) * (0.5f * gk * (1.f + erff(gk * 0.70710678118654752f))));
        }
        reinterpret_cast<uint4*>(y)[i] = ov;
    }
}

// bias_rows adds b[col] to every row of y [n/cols, cols].
template <typename T>
__device__ __forceinline__ void bias_rows_impl(int n, int cols, T* y, const T* __restrict__ b) {
    GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(y[i]) + to_f(b[i % cols]));
}

// bias_channels adds b[c] to y [N, C, spatial].
template <typename T>
__device__ __forceinline__ void bias_channels_impl(int n, int spatial, int channels, T* y, const T* __restrict__ b) {
    GRID_STRIDE(i, n) y[i] = from_f<T>(to_f(y[i]) + to_f(b[(i / spatial) % channels]));
}

// residual_bias writes y = r + b[c] for y [N, C, spatial]; r is the same
// shape (rfull) or [N, C, 1] (one value per plane). It fills the
// accumulator a convolution or GEMM then adds its product to. r may be y.
template <typename T>
__device__ __forceinline__ void residual_bias_impl(int n, int spatial, int channels, int rfull, const T* r,
                                                   const T* __restrict__ b, T* y) {
    GRID_STRIDE(i, n) {
        const int plane = i / spatial;
        y[i] = from_f<T>(to_f(r[rfull ? i : plane]) + to_f(b[plane % channels]));
    }
}

// residual_bias_vec is residual_bias moving 16 bytes per access: spatial
// must be a multiple of VEC(T) (a vector stays in one plane) and r, y
// 16-byte aligned; n counts vectors of y.
template <typename T>
__device__ __forceinline__ void residual_bias_vec_impl(int n, int spatial, int channels, int rfull, const T* r,
                                                       const T* __restrict__ b, T* y) {
    constexpr int V = VEC(T);
    GRID_STRIDE(i, n) {
        const int plane = i * V / spatial;
        const float bv = to_f(b[plane % channels]);
        uint4 ov;
        T* o = reinterpret_cast<T*>(&ov);
        if (rfull) {
            const uint4 rv = reinterpret_cast<const uint4*>(r)[i];
            const T* rr = reinterpret_cast<const T*>(&rv);
#pragma unroll
            for (int k = 0; k < V; k++) o[k] = from_f<T>(to_f(rr[k]) + bv);
        } else {
            const T v = from_f<T>(to_f(r[plane]) + bv);
#pragma unroll
            for (int k = 0; k < V; k++) o[k] = v;
        }
        reinterpret_cast<uint4*>(y)[i] = ov;
    }
}

// upsample2x is a nearest-neighbour 2x upsample of planes of h x w.
template <typename T>
__device__ __forceinline__ void upsample2x_impl(int n, int h, int w, const T* __restrict__ x, T* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int ox = i % (2 * w);
        int t = i / (2 * w);
        int oy = t % (2 * h);
        int p = t / (2 * h);
        y[i] = x[((size_t)p * h + oy / 2) * w + ox / 2];
    }
}

// copy2d copies rows x cols elements between strided row layouts.
template <typename T>
__device__ __forceinline__ void copy2d_impl(int n, int cols, const T* __restrict__ src, int srcStride, T* __restrict__ dst, int dstStride) {
    GRID_STRIDE(i, n) {
        int r = i / cols, c = i - r * cols;
        dst[(size_t)r * dstStride + c] = src[(size_t)r * srcStride + c];
    }
}

// gather_rows copies rows ids[i] of table [V, dim] into y [len(ids), dim].
template <typename T>
__device__ __forceinline__ void gather_rows_impl(int n, int dim, const T* __restrict__ table, const int* __restrict__ ids, T* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int r = i / dim;
        y[i] = table[(size_t)ids[r] * dim + (i - r * dim)];
    }
}

// im2col unfolds one image x [C, H, W] into col [C*KH*KW, cnt] for the
// output positions s0 .. s0+cnt-1 (row-major over OH x OW); padding reads 0.
// Block row blockIdx.y is col row row0+blockIdx.y (one channel and kernel
// tap), so a thread divides only to find its output position.
template <typename T>
__device__ __forceinline__ void im2col_impl(const T* __restrict__ x, T* __restrict__ col, int H, int W, int KH, int KW,
                                            int SH, int SW, int PT, int PL, int OW, int s0, int cnt, int row0) {
    const int row = row0 + blockIdx.y;
    const int kx = row % KW, ky = (row / KW) % KH, c = row / (KW * KH);
    const T* xc = x + (size_t)c * H * W;
    T* out = col + (size_t)row * cnt;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cnt; j += gridDim.x * blockDim.x) {
        const int s = s0 + j;
        const int oy = s / OW, ox = s - oy * OW;
        const int iy = oy * SH + ky - PT, ix = ox * SW + kx - PL;
        T v = from_f<T>(0.f);
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = xc[iy * W + ix];
        out[j] = v;
    }
}

#define ELEMENTWISE(S, T)                                                                                          \
    extern "C" __global__ void unary_##S(int op, int n, const T* x, T* y) { unary_impl<T>(op, n, x, y); }          \
    extern "C" __global__ void affine_##S(int n, const T* x, T* y, float alpha, float beta) {                     \
        affine_impl<T>(n, x, y, alpha, beta);                                                                      \
    }                                                                                                              \
    extern "C" __global__ void clamp_##S(int n, const T* x, T* y, float lo, float hi) {                          \
        clamp_impl<T>(n, x, y, lo, hi);                                                                            \
    }                                                                                                              \
    extern "C" __global__ void binary_##S(int op, int n, const T* a, const T* b, T* y) {                          \
        binary_impl<T>(op, n, a, b, y);                                                                            \
    }                                                                                                              \
    extern "C" __global__ void binary_bcast_##S(int op, int n, const T* a, const T* b, T* y, Dims d) {            \
        binary_bcast_impl<T>(op, n, a, b, y, d);                                                                   \
    }                                                                                                              \
    extern "C" __global__ void binary_rows_##S(int op, int rows, int cols, int per, int groups, int swap, int vec,  \
                                               const T* x, const T* r, T* y) {                                     \
        binary_rows_impl<T>(op, rows, cols, per, groups, swap, vec, x, r, y);                                      \
    }                                                                                                              \
    extern "C" __global__ void permute_##S(int n, const T* x, T* y, Dims d) { permute_impl<T>(n, x, y, d); }      \
    extern "C" __global__ void geglu_##S(int n, int h, const T* x, T* y) { geglu_impl<T>(n, h, x, y); }           \
    extern "C" __global__ void bias_rows_##S(int n, int cols, T* y, const T* b) { bias_rows_impl<T>(n, cols, y, b); } \
    extern "C" __global__ void bias_channels_##S(int n, int spatial, int channels, T* y, const T* b) {            \
        bias_channels_impl<T>(n, spatial, channels, y, b);                                                         \
    }                                                                                                              \
    extern "C" __global__ void residual_bias_##S(int n, int spatial, int channels, int rfull, const T* r,         \
                                                 const T* b, T* y) {                                               \
        residual_bias_impl<T>(n, spatial, channels, rfull, r, b, y);                                               \
    }                                                                                                              \
    extern "C" __global__ void residual_bias_vec_##S(int n, int spatial, int channels, int rfull, const T* r,     \
                                                     const T* b, T* y) {                                           \
        residual_bias_vec_impl<T>(n, spatial, channels, rfull, r, b, y);                                           \
    }                                                                                                              \
    extern "C" __global__ void geglu_vec_##S(int n, int h, const T* x, T* y) { geglu_vec_impl<T>(n, h, x, y); }   \
    extern "C" __global__ void upsample2x_##S(int n, int h, int w, const T* x, T* y) {                            \
        upsample2x_impl<T>(n, h, w, x, y);                                                                         \
    }                                                                                                              \
    extern "C" __global__ void copy2d_##S(int n, int cols, const T* src, int srcStride, T* dst, int dstStride) {  \
        copy2d_impl<T>(n, cols, src, srcStride, dst, dstStride);                                                   \
    }                                                                                                              \
    extern "C" __global__ void gather_rows_##S(int n, int dim, const T* table, const int* ids, T* y) {            \
        gather_rows_impl<T>(n, dim, table, ids, y);                                                                \
    }                                                                                                              \
    extern "C" __global__ void im2col_##S(const T* x, T* col, int H, int W, int KH, int KW, int SH, int SW,      \
                                          int PT, int PL, int OW, int s0, int cnt, int row0) {                     \
        im2col_impl<T>(x, col, H, W, KH, KW, SH, SW, PT, PL, OW, s0, cnt, row0);                                   \
    }

FOR_EACH_TYPE(ELEMENTWISE)
