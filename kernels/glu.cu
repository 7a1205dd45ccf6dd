// Gated linear units: out[r, j] = act(gate[r, j]) * up[r, j] over rows of n elements; gate and
// up rows are `stride` elements apart (stride = n for separate tensors; 2n with gate and up side
// by side in one [rows, 2n] tensor, up = gate + n).
#include "compat.h"

struct GluParams {
    const float* gate;  // [rows, stride]
    const float* up;    // [rows, stride]
    float* out;         // [rows, n]
    u64 count;          // rows * n
    u64 n;
    u64 stride;
};

RF_DEVICE float rf_silu(float x) { return x / (1.0f + expf(-x)); }
// tanh approximation of GELU, as llama.cpp and Gemma use.
RF_DEVICE float rf_gelu(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

RF_KERNEL void swiglu_f32(const GluParams p) {
    RF_PDL_WAIT();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.count;
         i += (u64)gridDim.x * blockDim.x)
    {
        const u64 j = (i / p.n) * p.stride + i % p.n;
        p.out[i] = rf_silu(p.gate[j]) * p.up[j];
    }
}

RF_KERNEL void geglu_f32(const GluParams p) {
    RF_PDL_WAIT();
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.count;
         i += (u64)gridDim.x * blockDim.x)
    {
        const u64 j = (i / p.n) * p.stride + i % p.n;
        p.out[i] = rf_gelu(p.gate[j]) * p.up[j];
    }
}
