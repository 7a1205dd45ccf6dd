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

// The rotation of pair i (i < rot_dim / 2) at position pos: its two indices within the head
// (a, b) and the angle's cosine and sine. Shared by rope_f32 and qkv_rope_store_f32.
RF_DEVICE void rf_rope_pair(float pos, u32 i, u32 rot_dim, u32 neox, float base, float freq_scale,
                            const float* freq_factors, u32* a, u32* b, float* c, float* s) {
    const u32 half = rot_dim / 2;
    float theta = pos * freq_scale * powf(base, -2.0f * (float)i / (float)rot_dim);
    if (freq_factors) theta /= freq_factors[i];
    sincosf(theta, s, c);
    *a = neox ? i : 2 * i;
    *b = neox ? i + half : 2 * i + 1;
}

RF_KERNEL void rope_f32(const RopeParams p) {
    RF_PDL_WAIT();
    const u32 t = blockIdx.x, h = blockIdx.y;
    float* x = p.x + ((u64)t * p.heads + h) * p.head_dim;
    const float pos = (float)p.positions[t];
    const u32 half = p.rot_dim / 2;
    for (u32 i = threadIdx.x; i < half; i += blockDim.x) {
        u32 a, b;
        float c, s;
        rf_rope_pair(pos, i, p.rot_dim, p.neox, p.base, p.freq_scale, p.freq_factors, &a, &b, &c, &s);
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

// The attention input step fused. Q, K and V rows come from q_src, k_src and v_src with their
// own row strides (one stacked [Q | K | V] product: three column offsets of one buffer; separate
// products: three buffers). Q heads are rotated into q_out, K heads rotated and V heads copied
// into the paged F16 caches ([blocks, n_kv_heads, 16, head_dim]) at each token's slot. Same
// arithmetic as rope_f32 followed by kv_store_f16. grid (tokens, n_heads + 2 n_kv_heads).
struct QkvRopeStoreParams {
    const float* q_src;          // row t, head h at q_src + t * q_stride + h * head_dim
    const float* k_src;
    const float* v_src;
    float* q_out;                // [tokens, n_heads * head_dim]
    u16* k_cache;
    u16* v_cache;
    const u32* positions;        // [tokens]
    const u32* seq_of_token;     // [tokens]
    const u32* block_tables;     // [n_seqs, max_blocks]
    const float* freq_factors;   // [rot_dim/2] or null
    u32 n_heads;
    u32 n_kv_heads;
    u32 head_dim;
    u32 rot_dim;
    u32 neox;
    u32 max_blocks;
    float base;
    float freq_scale;
    u32 q_stride;                // floats between tokens' rows
    u32 k_stride;
    u32 v_stride;
};

#define QKV_KV_BLOCK 16u

RF_KERNEL void qkv_rope_store_f32(const QkvRopeStoreParams p) {
    RF_PDL_WAIT();
    const u32 t = blockIdx.x, h = blockIdx.y, D = p.head_dim;
    const float* x = h < p.n_heads ? p.q_src + (u64)t * p.q_stride + (u64)h * D
                     : h < p.n_heads + p.n_kv_heads
                         ? p.k_src + (u64)t * p.k_stride + (u64)(h - p.n_heads) * D
                         : p.v_src + (u64)t * p.v_stride + (u64)(h - p.n_heads - p.n_kv_heads) * D;
    const u32 pos = p.positions[t];
    const bool is_q = h < p.n_heads;
    const u32 g = is_q ? 0 : (h - p.n_heads) % p.n_kv_heads;
    u64 dst = 0;
    if (!is_q) {
        const u32 blk =
            p.block_tables[(u64)p.seq_of_token[t] * p.max_blocks + pos / QKV_KV_BLOCK];
        dst = (((u64)blk * p.n_kv_heads + g) * QKV_KV_BLOCK + pos % QKV_KV_BLOCK) * D;
    }
    if (h >= p.n_heads + p.n_kv_heads) {  // V: copied
        for (u32 d = threadIdx.x; d < D; d += blockDim.x) p.v_cache[dst + d] = rf_f2h(x[d]);
        return;
    }
    float* q = is_q ? p.q_out + ((u64)t * p.n_heads + h) * D : (float*)0;
    const u32 half = p.rot_dim / 2;
    const float fpos = (float)pos;
    for (u32 i = threadIdx.x; i < half; i += blockDim.x) {
        u32 a, b;
        float c, s;
        rf_rope_pair(fpos, i, p.rot_dim, p.neox, p.base, p.freq_scale, p.freq_factors, &a, &b, &c, &s);
        const float x0 = x[a], x1 = x[b];
        const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if (is_q) {
            q[a] = y0;
            q[b] = y1;
        } else {
            p.k_cache[dst + a] = rf_f2h(y0);
            p.k_cache[dst + b] = rf_f2h(y1);
        }
    }
    for (u32 d = p.rot_dim + threadIdx.x; d < D; d += blockDim.x) {
        if (is_q) q[d] = x[d];
        else p.k_cache[dst + d] = rf_f2h(x[d]);
    }
}
