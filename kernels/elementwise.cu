// Elementwise, broadcasting and data-movement kernels (float32).
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

extern "C" __global__ void unary_f32(int op, int n, const float* x, float* y) {
    GRID_STRIDE(i, n) y[i] = unary_apply(op, x[i]);
}

extern "C" __global__ void affine_f32(int n, const float* x, float* y, float alpha, float beta) {
    GRID_STRIDE(i, n) y[i] = x[i] * alpha + beta;
}

// binary_f32 handles equal shapes; y may alias a or b.
extern "C" __global__ void binary_f32(int op, int n, const float* a, const float* b, float* y) {
    GRID_STRIDE(i, n) y[i] = binary_apply(op, a[i], b[i]);
}

// binary_bcast_f32 broadcasts a and b to d.shape through the strides d.sa and d.sb.
extern "C" __global__ void binary_bcast_f32(int op, int n, const float* a, const float* b, float* y, Dims d) {
    GRID_STRIDE(i, n) {
        int r = i, ia = 0, ib = 0;
        for (int k = d.rank - 1; k >= 0; k--) {
            int c = r % d.shape[k];
            r /= d.shape[k];
            ia += c * d.sa[k];
            ib += c * d.sb[k];
        }
        y[i] = binary_apply(op, a[ia], b[ib]);
    }
}

// permute_f32 writes y (shape d.shape) from x read through the strides d.sa.
extern "C" __global__ void permute_f32(int n, const float* __restrict__ x, float* __restrict__ y, Dims d) {
    GRID_STRIDE(i, n) {
        int r = i, ix = 0;
        for (int k = d.rank - 1; k >= 0; k--) {
            ix += (r % d.shape[k]) * d.sa[k];
            r /= d.shape[k];
        }
        y[i] = x[ix];
    }
}

// geglu_f32 computes a*gelu(g) for rows of x = [a | g], each half h wide.
extern "C" __global__ void geglu_f32(int n, int h, const float* __restrict__ x, float* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int r = i / h, c = i - r * h;
        float a = x[(size_t)r * 2 * h + c], g = x[(size_t)r * 2 * h + h + c];
        y[i] = a * (0.5f * g * (1.f + erff(g * 0.70710678118654752f)));
    }
}

// bias_rows_f32 adds b[col] to every row of y [n/cols, cols].
extern "C" __global__ void bias_rows_f32(int n, int cols, float* y, const float* __restrict__ b) {
    GRID_STRIDE(i, n) y[i] += b[i % cols];
}

// bias_channels_f32 adds b[c] to y [N, C, spatial].
extern "C" __global__ void bias_channels_f32(int n, int spatial, int channels, float* y, const float* __restrict__ b) {
    GRID_STRIDE(i, n) y[i] += b[(i / spatial) % channels];
}

// upsample2x_f32 is a nearest-neighbour 2x upsample of planes of h x w.
extern "C" __global__ void upsample2x_f32(int n, int h, int w, const float* __restrict__ x, float* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int ox = i % (2 * w);
        int t = i / (2 * w);
        int oy = t % (2 * h);
        int p = t / (2 * h);
        y[i] = x[((size_t)p * h + oy / 2) * w + ox / 2];
    }
}

// copy2d_f32 copies rows x cols elements between strided row layouts.
extern "C" __global__ void copy2d_f32(int n, int cols, const float* __restrict__ src, int srcStride, float* __restrict__ dst, int dstStride) {
    GRID_STRIDE(i, n) {
        int r = i / cols, c = i - r * cols;
        dst[(size_t)r * dstStride + c] = src[(size_t)r * srcStride + c];
    }
}

// gather_rows_f32 copies rows ids[i] of table [V, dim] into y [len(ids), dim].
extern "C" __global__ void gather_rows_f32(int n, int dim, const float* __restrict__ table, const int* __restrict__ ids, float* __restrict__ y) {
    GRID_STRIDE(i, n) {
        int r = i / dim;
        y[i] = table[(size_t)ids[r] * dim + (i - r * dim)];
    }
}

// im2col_f32 unfolds one image x [C, H, W] into col [C*KH*KW, cnt] for the
// output positions s0 .. s0+cnt-1 (row-major over OH x OW); padding reads 0.
extern "C" __global__ void im2col_f32(int n, const float* __restrict__ x, float* __restrict__ col,
                                      int H, int W, int KH, int KW, int SH, int SW, int PT, int PL,
                                      int OW, int s0, int cnt) {
    GRID_STRIDE(i, n) {
        int row = i / cnt, j = i - row * cnt;
        int kx = row % KW;
        int ky = (row / KW) % KH;
        int c = row / (KW * KH);
        int s = s0 + j;
        int oy = s / OW, ox = s - oy * OW;
        int iy = oy * SH + ky - PT, ix = ox * SW + kx - PL;
        float v = 0.f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) v = x[((size_t)c * H + iy) * W + ix];
        col[i] = v;
    }
}
