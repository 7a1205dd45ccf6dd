// Row softmax: y = softmax(x * scale) over rows of n; y may alias x. One block per row.
#include "compat.h"

struct SoftmaxParams {
    const float* x;  // [rows, n]
    float* y;        // [rows, n]
    u32 n;
    float scale;
};

RF_KERNEL void softmax_f32(const SoftmaxParams p) {
    RF_PDL_WAIT();
    __shared__ float scratch[32];
    const u64 base = (u64)blockIdx.x * p.n;
    float m = -RF_INF;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) m = fmaxf(m, p.x[base + i] * p.scale);
    m = rf_block_max(m, scratch);
    float s = 0.0f;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) s += expf(p.x[base + i] * p.scale - m);
    s = rf_block_sum(s, scratch);
    const float inv = 1.0f / s;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x)
        p.y[base + i] = expf(p.x[base + i] * p.scale - m) * inv;
}
