// Attention over the paged F16 KV cache, flash style (online softmax, no score matrix).
// KV layout per layer: [num_blocks, n_kv_heads, BLOCK (16), head_dim] f16, for K and for V.
// One block of ATT_WARPS warps per (token, query head); warps split the keys, lanes split
// head_dim (lane, lane + WARP_SIZE, ...), partial results merge through shared memory.
// Covers prefill (causal: key j visible when j <= pos) and decode alike, non-causal attention,
// GQA (query head h reads kv head h / (n_heads / n_kv_heads)), a sliding window
// (pos - j < window) and logit soft-capping (s = cap * tanh(s / cap)).
#include "compat.h"

#define KV_BLOCK 16
#define ATT_WARPS 4
#define ATT_MAX_DIM 256
#define ATT_PER_LANE (ATT_MAX_DIM / WARP_SIZE)

struct AttentionParams {
    const float* q;             // [tokens, n_heads, head_dim]
    const u16* k_cache;         // [num_blocks, n_kv_heads, KV_BLOCK, head_dim]
    const u16* v_cache;
    const u32* block_tables;    // [n_seqs, max_blocks]
    const u32* seq_of_token;    // [tokens]
    const u32* positions;       // [tokens]
    const u32* kv_lens;         // [n_seqs]
    float* out;                 // [tokens, n_heads, head_dim]
    u32 n_heads;
    u32 n_kv_heads;
    u32 head_dim;
    u32 max_blocks;
    u32 causal;
    u32 window;                 // 0: none
    float scale;
    float softcap;              // 0: none
};

RF_KERNEL void attention_f16kv(const AttentionParams p) {
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][ATT_MAX_DIM];
    const u32 t = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const u32 seq = p.seq_of_token[t];
    const u32 kv_len = p.kv_lens[seq];
    const u32 pos = p.positions[t];
    const u32 g = h / (p.n_heads / p.n_kv_heads);
    const u32* table = p.block_tables + (u64)seq * p.max_blocks;
    const u32 end = p.causal ? min(pos + 1, kv_len) : kv_len;
    const u32 start = (p.window > 0 && pos + 1 > p.window) ? pos + 1 - p.window : 0;
    const float* q = p.q + ((u64)t * p.n_heads + h) * p.head_dim;
    float qv[ATT_PER_LANE], acc[ATT_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        const u32 d = lane + i * WARP_SIZE;
        qv[i] = d < p.head_dim ? q[d] * p.scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -RF_INF, l = 0.0f;
    for (u32 j = start + warp; j < end; j += ATT_WARPS) {
        const u64 off = (((u64)table[j / KV_BLOCK] * p.n_kv_heads + g) * KV_BLOCK + j % KV_BLOCK) * p.head_dim;
        const u16* k = p.k_cache + off;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; i++) {
            const u32 d = lane + i * WARP_SIZE;
            if (d < p.head_dim) s += qv[i] * rf_h2f(k[d]);
        }
        s = rf_warp_sum(s);
        if (p.softcap > 0.0f) s = p.softcap * tanhf(s / p.softcap);
        const float m2 = fmaxf(m, s);
        const float corr = expf(m - m2), w = expf(s - m2);
        l = l * corr + w;
        const u16* v = p.v_cache + off;
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; i++) {
            const u32 d = lane + i * WARP_SIZE;
            acc[i] = acc[i] * corr + (d < p.head_dim ? w * rf_h2f(v[d]) : 0.0f);
        }
        m = m2;
    }
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        const u32 d = lane + i * WARP_SIZE;
        if (d < p.head_dim) sacc[warp][d] = acc[i];
    }
    __syncthreads();
    float M = -RF_INF;
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f;
    float f[ATT_WARPS];
#pragma unroll
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = sm[w] == -RF_INF ? 0.0f : expf(sm[w] - M);
        L += sl[w] * f[w];
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float* o = p.out + ((u64)t * p.n_heads + h) * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) s += sacc[w][d] * f[w];
        o[d] = s * inv;
    }
}

struct KvWriteParams {
    const float* k;             // [tokens, n_kv_heads, head_dim]
    const float* v;
    u16* k_cache;               // [num_blocks, n_kv_heads, KV_BLOCK, head_dim]
    u16* v_cache;
    const u32* block_tables;    // [n_seqs, max_blocks]
    const u32* seq_of_token;    // [tokens]
    const u32* positions;       // [tokens]
    u32 n_kv_heads;
    u32 head_dim;
    u32 max_blocks;
};

// Stores the new keys and values (as f16) in their cache slots. grid (tokens, n_kv_heads).
RF_KERNEL void kv_write_f16(const KvWriteParams p) {
    const u32 t = blockIdx.x, g = blockIdx.y;
    const u32 pos = p.positions[t];
    const u32 blk = p.block_tables[(u64)p.seq_of_token[t] * p.max_blocks + pos / KV_BLOCK];
    const u64 dst = (((u64)blk * p.n_kv_heads + g) * KV_BLOCK + pos % KV_BLOCK) * p.head_dim;
    const u64 src = ((u64)t * p.n_kv_heads + g) * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        p.k_cache[dst + d] = rf_f2h(p.k[src + d]);
        p.v_cache[dst + d] = rf_f2h(p.v[src + d]);
    }
}

// Stores one cache (K or V) only: the same as kv_write_f16 for a single tensor.
RF_KERNEL void kv_store_f16(const KvWriteParams p) {
    const u32 t = blockIdx.x, g = blockIdx.y;
    const u32 pos = p.positions[t];
    const u32 blk = p.block_tables[(u64)p.seq_of_token[t] * p.max_blocks + pos / KV_BLOCK];
    const u64 dst = (((u64)blk * p.n_kv_heads + g) * KV_BLOCK + pos % KV_BLOCK) * p.head_dim;
    const u64 src = ((u64)t * p.n_kv_heads + g) * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) p.k_cache[dst + d] = rf_f2h(p.k[src + d]);
}

// The weighted sum as its own op: out[t, h, :] = sum_j w[t, h, j] * V[j] over j < n_keys,
// V read from the paged cache of token t's sequence. grid (tokens, n_heads).
struct WeightedVParams {
    const float* w;             // [tokens, n_heads, w_stride]
    const u16* v_cache;
    const u32* block_tables;
    const u32* seq_of_token;
    float* out;                 // [tokens, n_heads, head_dim]
    u32 n_keys;
    u32 w_stride;
    u32 n_heads;
    u32 n_kv_heads;
    u32 head_dim;
    u32 max_blocks;
};

RF_KERNEL void weighted_v_f16kv(const WeightedVParams p) {
    const u32 t = blockIdx.x, h = blockIdx.y;
    const u32 g = h / (p.n_heads / p.n_kv_heads);
    const u32* table = p.block_tables + (u64)p.seq_of_token[t] * p.max_blocks;
    const float* w = p.w + ((u64)t * p.n_heads + h) * p.w_stride;
    float* o = p.out + ((u64)t * p.n_heads + h) * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float s = 0.0f;
        for (u32 j = 0; j < p.n_keys; j++) {
            const u64 off = (((u64)table[j / KV_BLOCK] * p.n_kv_heads + g) * KV_BLOCK + j % KV_BLOCK) * p.head_dim;
            s += w[j] * rf_h2f(p.v_cache[off + d]);
        }
        o[d] = s;
    }
}
