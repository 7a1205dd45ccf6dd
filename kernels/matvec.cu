// Quantized matrix x vector: y[b, r] = sum_k W[r, k] * x[b, k] (+ bias[r]).
// One warp per row; lanes take consecutive 32-element chunks, so a warp reads a contiguous stretch
// of the row (16-byte loads where the block layout allows). Each weight byte is read once per
// vector. grid.y runs over the batch of vectors.
#include "quants.h"

struct MatvecParams {
    const u8* w;        // [rows] rows of row_bytes bytes
    const float* x;     // [batch, x_stride]
    const float* bias;  // [rows] or null
    float* y;           // [batch, y_stride]
    u64 row_bytes;
    u32 rows;
    u32 cols;
    u32 x_stride;
    u32 y_stride;
    u32 rows_per_warp;  // 1..MV_ROWS
};

// Each warp computes rows_per_warp (<= MV_ROWS) rows, so every x chunk it loads serves that many
// weight chunks (x is read from L1/L2 once per rows_per_warp rows instead of once per row). Large
// matrices use 4; small ones 1, to spread over more warps.
#define MV_ROWS 4

template <int T> RF_DEVICE void matvec(const MatvecParams& p) {
    const int lane = threadIdx.x % WARP_SIZE;
    const u32 rpw = p.rows_per_warp;
    const u32 row0 = (blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE) * rpw;
    if (row0 >= p.rows) return;
    const float* x = p.x + (u64)blockIdx.y * p.x_stride;
    const int nchunks = p.cols / 32;
    float acc[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++) acc[r] = 0.0f;
    for (int ch = lane; ch < nchunks; ch += WARP_SIZE) {
        float xv[32];
        const float4* x4 = (const float4*)(x + 32 * ch);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 f = x4[i];
            xv[4 * i] = f.x; xv[4 * i + 1] = f.y; xv[4 * i + 2] = f.z; xv[4 * i + 3] = f.w;
        }
#pragma unroll
        for (int r = 0; r < MV_ROWS; r++) {
            if (r < rpw && row0 + r < p.rows) {
                float v[32];
                rf_deq_row_chunk<T>(p.w + (u64)(row0 + r) * p.row_bytes, ch, v);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 32; i++) s += v[i] * xv[i];
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++) {
        const float a = rf_warp_sum(acc[r]);
        if (lane == 0 && r < rpw && row0 + r < p.rows)
            p.y[(u64)blockIdx.y * p.y_stride + row0 + r] = a + (p.bias ? p.bias[row0 + r] : 0.0f);
    }
}

#define RF_MATVEC(T, s) \
    RF_KERNEL void matvec_##s(const MatvecParams p) { matvec<T>(p); }
RF_FOR_EACH_TYPE(RF_MATVEC)

// Unquantized weights whose rows are not a multiple of 32 elements: element loads.
template <int T> RF_DEVICE float rf_ld_elem(const u8* row, u32 k);
template <> RF_DEVICE_SPEC float rf_ld_elem<RF_F32>(const u8* row, u32 k) { return ((const float*)row)[k]; }
template <> RF_DEVICE_SPEC float rf_ld_elem<RF_F16>(const u8* row, u32 k) { return rf_h2f(((const u16*)row)[k]); }
template <> RF_DEVICE_SPEC float rf_ld_elem<RF_BF16>(const u8* row, u32 k) { return rf_bf2f(((const u16*)row)[k]); }

template <int T> RF_DEVICE void matvec_scalar(const MatvecParams& p) {
    const int lane = threadIdx.x % WARP_SIZE;
    const u32 row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= p.rows) return;
    const u8* w = p.w + (u64)row * p.row_bytes;
    const float* x = p.x + (u64)blockIdx.y * p.x_stride;
    float acc = 0.0f;
    for (u32 k = lane; k < p.cols; k += WARP_SIZE) acc += rf_ld_elem<T>(w, k) * x[k];
    acc = rf_warp_sum(acc);
    if (lane == 0) p.y[(u64)blockIdx.y * p.y_stride + row] = acc + (p.bias ? p.bias[row] : 0.0f);
}

RF_KERNEL void matvec_scalar_f32(const MatvecParams p) { matvec_scalar<RF_F32>(p); }
RF_KERNEL void matvec_scalar_f16(const MatvecParams p) { matvec_scalar<RF_F16>(p); }
RF_KERNEL void matvec_scalar_bf16(const MatvecParams p) { matvec_scalar<RF_BF16>(p); }
