// RMSNorm fused with the residual add: s = x (+ residual); sum_out = s (optional);
// out = s / sqrt(mean(s^2) + eps) * weight. One block per row.
#include "compat.h"

struct RmsNormParams {
    const float* x;         // [rows, n]
    const float* residual;  // [rows, n] or null
    float* sum_out;         // [rows, n] or null: receives x + residual (may alias x or residual)
    const float* weight;    // [n]
    float* out;             // [rows, n] (may alias x)
    u32 n;
    float eps;
};

RF_KERNEL void rms_norm_f32(const RmsNormParams p) {
    RF_PDL_WAIT();
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * p.n;
    float ss = 0.0f;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
        float s = p.x[base + i];
        if (p.residual) s += p.residual[base + i];
        if (p.sum_out) p.sum_out[base + i] = s;
        ss += s * s;
    }
    ss = rf_block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)p.n + p.eps);
    // Each thread revisits exactly the elements it wrote above, so aliasing is safe.
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) {
        float s;
        if (p.sum_out) s = p.sum_out[base + i];
        else s = p.x[base + i] + (p.residual ? p.residual[base + i] : 0.0f);
        p.out[base + i] = s * scale * p.weight[i];
    }
}

// The same for rows of at most 8 x blockDim.x: each thread loads its elements of x, residual and
// weight at once and keeps them in registers (no second read of the row). Same float
// operations in the same order as rms_norm_f32, so the same bits.
#define RMS_REGS 8
RF_KERNEL void rms_norm_f32_r8(const RmsNormParams p) {
    RF_PDL_WAIT();
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * p.n;
    float s[RMS_REGS], w[RMS_REGS];
#pragma unroll
    for (int k = 0; k < RMS_REGS; k++) {
        const u32 i = threadIdx.x + k * blockDim.x;
        s[k] = 0.0f;
        w[k] = 0.0f;
        if (i < p.n) {
            s[k] = p.x[base + i];
            w[k] = p.weight[i];
        }
    }
    if (p.residual) {
#pragma unroll
        for (int k = 0; k < RMS_REGS; k++) {
            const u32 i = threadIdx.x + k * blockDim.x;
            if (i < p.n) s[k] += p.residual[base + i];
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < RMS_REGS; k++) {
        const u32 i = threadIdx.x + k * blockDim.x;
        if (i < p.n) {
            if (p.sum_out) p.sum_out[base + i] = s[k];
            ss += s[k] * s[k];
        }
    }
    ss = rf_block_sum(ss, scratch);
    const float scale = rsqrtf(ss / (float)p.n + p.eps);
#pragma unroll
    for (int k = 0; k < RMS_REGS; k++) {
        const u32 i = threadIdx.x + k * blockDim.x;
        if (i < p.n) p.out[base + i] = s[k] * scale * w[k];
    }
}
