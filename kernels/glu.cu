// Gated linear units: out[i] = act(gate[i]) * up[i] over rows of n elements.
#include "compat.h"

struct GluParams {
    const float* gate;  // [rows, n]
    const float* up;    // [rows, n]
    float* out;         // [rows, n]
    u64 count;          // rows * n
};

RF_DEVICE float rf_silu(float x) { return x / (1.0f + expf(-x)); }
// tanh approximation of GELU, as llama.cpp and Gemma use.
RF_DEVICE float rf_gelu(float x) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

RF_KERNEL void swiglu_f32(const GluParams p) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.count;
         i += (u64)gridDim.x * blockDim.x)
        p.out[i] = rf_silu(p.gate[i]) * p.up[i];
}

RF_KERNEL void geglu_f32(const GluParams p) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < p.count;
         i += (u64)gridDim.x * blockDim.x)
        p.out[i] = rf_gelu(p.gate[i]) * p.up[i];
}
