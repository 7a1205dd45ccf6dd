// Rotary position embedding, in place on [tokens, heads, head_dim].
// Normal mode rotates pairs (2i, 2i+1); NeoX mode rotates (i, i + rot_dim/2).
// theta_i = pos * freq_scale * base^(-2i/rot_dim) / freq_factors[i] (freq_factors optional).
#include "compat.h"

struct RopeParams {
    float* x;                    // [tokens, heads, head_dim]
    const u32* positions;        // [tokens]
    const float* freq_factors;   // [rot_dim/2] or null
    u32 heads;
    u32 head_dim;
    u32 rot_dim;                 // <= head_dim, even
    u32 neox;                    // 0: normal, 1: NeoX
    float base;
    float freq_scale;
};

RF_KERNEL void rope_f32(const RopeParams p) {
    const u32 t = blockIdx.x, h = blockIdx.y;
    float* x = p.x + ((u64)t * p.heads + h) * p.head_dim;
    const float pos = (float)p.positions[t];
    const u32 half = p.rot_dim / 2;
    for (u32 i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = pos * p.freq_scale * powf(p.base, -2.0f * (float)i / (float)p.rot_dim);
        if (p.freq_factors) theta /= p.freq_factors[i];
        float s, c;
        sincosf(theta, &s, &c);
        const u32 a = p.neox ? i : 2 * i, b = p.neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}
