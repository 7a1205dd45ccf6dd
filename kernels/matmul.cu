// Matrix x matrix for prompt processing: Y[t, r] = sum_k X[t, k] * W[r, k] (+ bias[r]).
// The portable path: 64x64 output tiles, K in steps of 32; the weight tile is dequantized into
// shared memory once per step (one chunk per thread), each thread accumulates a 4x4 micro-tile.
// Also: dequantization of whole rows to F16, feeding cuBLAS on CUDA.
#include "quants.h"

#define MM_TR 64   // weight rows per tile
#define MM_TT 64   // tokens per tile
#define MM_TK 32

struct MatmulParams {
    const u8* w;        // [rows] rows of row_bytes
    const float* x;     // [tokens, cols]
    const float* bias;  // [rows] or null
    float* y;           // [tokens, y_stride]
    u64 row_bytes;
    u32 rows;
    u32 cols;           // multiple of 32
    u32 tokens;
    u32 y_stride;
};

template <int T> RF_DEVICE void matmul(const MatmulParams& p) {
    RF_PDL_WAIT();
    __shared__ float ws[MM_TR][MM_TK + 1];
    __shared__ float xs[MM_TT][MM_TK + 1];
    const u32 r0 = blockIdx.x * MM_TR, t0 = blockIdx.y * MM_TT;
    const int tid = threadIdx.x;            // 256 threads
    const int tr = (tid % 16) * 4, tt = (tid / 16) * 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (u32 k0 = 0; k0 < p.cols; k0 += MM_TK) {
        if (tid < MM_TR) {
            const u32 r = r0 + tid;
            float v[32];
            if (r < p.rows) {
                rf_deq_row_chunk<T>(p.w + (u64)r * p.row_bytes, k0 / 32, v);
            } else {
#pragma unroll
                for (int i = 0; i < 32; i++) v[i] = 0.0f;
            }
#pragma unroll
            for (int i = 0; i < 32; i++) ws[tid][i] = v[i];
        }
        for (int i = tid; i < MM_TT * MM_TK; i += blockDim.x) {
            const int t = i / MM_TK, k = i % MM_TK;
            xs[t][k] = (t0 + t < p.tokens) ? p.x[(u64)(t0 + t) * p.cols + k0 + k] : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < MM_TK; k++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) { a[i] = ws[tr + i][k]; b[i] = xs[tt + i][k]; }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const u32 t = t0 + tt + j;
        if (t >= p.tokens) continue;
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u32 r = r0 + tr + i;
            if (r < p.rows) p.y[(u64)t * p.y_stride + r] = acc[i][j] + (p.bias ? p.bias[r] : 0.0f);
        }
    }
}

#define RF_MATMUL(T, s) \
    RF_KERNEL void matmul_##s(const MatmulParams p) { matmul<T>(p); }
RF_FOR_EACH_TYPE(RF_MATMUL)

struct DequantParams {
    const u8* w;   // [rows] rows of row_bytes
    u16* out;      // [rows, cols] f16
    u64 row_bytes;
    u32 rows;
    u32 cols;      // multiple of 32
};

// One thread per 32-element chunk.
template <int T> RF_DEVICE void dequant_f16(const DequantParams& p) {
    RF_PDL_WAIT();
    const u64 chunks_per_row = p.cols / 32;
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= chunks_per_row * p.rows) return;
    const u64 r = i / chunks_per_row, ch = i % chunks_per_row;
    float v[32];
    rf_deq_row_chunk<T>(p.w + r * p.row_bytes, (int)ch, v);
    // 16-byte stores: the chunk's 64 bytes start on a 64-byte boundary (out is 256-aligned).
    uint4* o = (uint4*)(p.out + r * p.cols + 32 * ch);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const float* s = v + 8 * q;
        uint4 u;
        u.x = (u32)rf_f2h(s[0]) | ((u32)rf_f2h(s[1]) << 16);
        u.y = (u32)rf_f2h(s[2]) | ((u32)rf_f2h(s[3]) << 16);
        u.z = (u32)rf_f2h(s[4]) | ((u32)rf_f2h(s[5]) << 16);
        u.w = (u32)rf_f2h(s[6]) | ((u32)rf_f2h(s[7]) << 16);
        o[q] = u;
    }
}

#define RF_DEQUANT(T, s) \
    RF_KERNEL void dequant_f16_##s(const DequantParams p) { dequant_f16<T>(p); }
RF_FOR_EACH_TYPE(RF_DEQUANT)

// f32 -> f16 conversion of activations (for cuBLAS).
RF_KERNEL void f32_to_f16(const float* x, u16* y, u64 n) {
    RF_PDL_WAIT();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        y[i] = rf_f2h(x[i]);
}
