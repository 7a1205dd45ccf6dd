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
};

template <int T> RF_DEVICE void matvec(const MatvecParams& p) {
    const int lane = threadIdx.x % WARP_SIZE;
    const u32 row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= p.rows) return;
    const u8* w = p.w + (u64)row * p.row_bytes;
    const float* x = p.x + (u64)blockIdx.y * p.x_stride;
    const int nchunks = p.cols / 32;
    float acc = 0.0f;
    for (int ch = lane; ch < nchunks; ch += WARP_SIZE) {
        float v[32];
        rf_deq_row_chunk<T>(w, ch, v);
        const float4* x4 = (const float4*)(x + 32 * ch);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 xx = x4[i];
            acc += v[4 * i] * xx.x + v[4 * i + 1] * xx.y + v[4 * i + 2] * xx.z + v[4 * i + 3] * xx.w;
        }
    }
    acc = rf_warp_sum(acc);
    if (lane == 0) p.y[(u64)blockIdx.y * p.y_stride + row] = acc + (p.bias ? p.bias[row] : 0.0f);
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
