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
    u32 tokens;                 // query tokens (the tiled kernel's grid covers more)
    float2* split_ml;           // per-token kernel: [tokens, n_heads, ATT_MAX_CHUNKS] (max, sum)
    float* split_o;             // [tokens, n_heads, ATT_MAX_CHUNKS, head_dim] unnormalized
    u32* counters;              // attention_vec: [tokens, n_heads] zeros, left zero; or null
};

// Per-token attention, split over the keys ("flash decoding"): block (t, h, c) takes chunk c of
// token t's keys, the absolute key positions [c * CH, (c + 1) * CH) within its visible range,
// where CH = rf_att_chunk(end) depends only on the token's own end (so a token's result does not
// depend on the rest of the batch), and writes the chunk's running max, sum of weights and
// unnormalized output; attention_combine merges the chunks in order. 4 warps take the chunk's
// keys in turn (online softmax each), merged in the block. A block past the token's last chunk
// returns at once.
#define ATT_MAX_CHUNKS 8
RF_DEVICE u32 rf_att_chunk(u32 end) {
    u32 ch = 64;
    while (ch * ATT_MAX_CHUNKS < end) ch <<= 1;
    return ch;
}

// The key range [start, end) token t sees.
RF_DEVICE void rf_att_range(const AttentionParams& p, u32 t, u32* start, u32* end) {
    const u32 kv_len = p.kv_lens[p.seq_of_token[t]];
    const u32 pos = p.positions[t];
    *end = p.causal ? min(pos + 1, kv_len) : kv_len;
    *start = (p.window > 0 && pos + 1 > p.window) ? pos + 1 - p.window : 0;
}

RF_KERNEL void attention_f16kv(const AttentionParams p) {
    RF_PDL_WAIT();
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][ATT_MAX_DIM];
    const u32 t = blockIdx.x, h = blockIdx.y, c = blockIdx.z;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const u32 seq = p.seq_of_token[t];
    u32 start, end;
    rf_att_range(p, t, &start, &end);
    const u32 ch = rf_att_chunk(end);
    if (c * ch >= max(end, 1u)) return;  // past the last chunk (chunk 0 always runs)
    const u32 lo = max(start, c * ch), hi = min(end, (c + 1) * ch);
    const u32 g = h / (p.n_heads / p.n_kv_heads);
    const u32* table = p.block_tables + (u64)seq * p.max_blocks;
    const float* q = p.q + ((u64)t * p.n_heads + h) * p.head_dim;
    float qv[ATT_PER_LANE], acc[ATT_PER_LANE];
#pragma unroll
    for (int i = 0; i < ATT_PER_LANE; i++) {
        const u32 d = lane + i * WARP_SIZE;
        qv[i] = d < p.head_dim ? q[d] * p.scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -RF_INF, l = 0.0f;
    for (u32 j = lo + warp; j < hi; j += ATT_WARPS) {
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
    const u64 slot = ((u64)t * p.n_heads + h) * ATT_MAX_CHUNKS + c;
    if (threadIdx.x == 0) {
        float2 ml;
        ml.x = M;
        ml.y = L;
        p.split_ml[slot] = ml;
    }
    float* o = p.split_o + slot * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) s += sacc[w][d] * f[w];
        o[d] = s;
    }
}

// out[t, h] = (sum_c O_c e^(M_c - M)) / (sum_c L_c e^(M_c - M)) over token t's chunks, in
// chunk order (one chunk: exactly O_0 / L_0), threads over head_dim. The chunks' values are read
// through L2 (`ld.global.cg`): the last block of attention_vec reads what other blocks wrote.
RF_DEVICE float rf_ld_cg(const float* a) {
#if defined(RF_CUDA)
    return __ldcg(a);
#else
    return *(const volatile float*)a;
#endif
}

RF_DEVICE void rf_att_combine(const AttentionParams& p, u32 t, u32 h, u32 chunks) {
    const u64 slot = ((u64)t * p.n_heads + h) * ATT_MAX_CHUNKS;
    const float* ml = (const float*)(p.split_ml + slot);
    float M = -RF_INF;
    for (u32 c = 0; c < chunks; c++) M = fmaxf(M, rf_ld_cg(ml + 2 * c));
    float L = 0.0f;
    for (u32 c = 0; c < chunks; c++) {
        const float mc = rf_ld_cg(ml + 2 * c);
        L += rf_ld_cg(ml + 2 * c + 1) * (mc == -RF_INF ? 0.0f : expf(mc - M));
    }
    const float inv = L > 0.0f ? 1.0f / L : 0.0f;
    float* out = p.out + ((u64)t * p.n_heads + h) * p.head_dim;
    for (u32 d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
        float s = 0.0f;
        for (u32 c = 0; c < chunks; c++) {
            const float mc = rf_ld_cg(ml + 2 * c);
            s += rf_ld_cg(p.split_o + (slot + c) * p.head_dim + d) * (mc == -RF_INF ? 0.0f : expf(mc - M));
        }
        out[d] = s * inv;
    }
}

// Block (t, h): merges the chunks attention_f16kv (or attention_vec without counters) wrote.
RF_KERNEL void attention_combine(const AttentionParams p) {
    RF_PDL_WAIT();
    const u32 t = blockIdx.x, h = blockIdx.y;
    u32 start, end;
    rf_att_range(p, t, &start, &end);
    const u32 n = max(end, 1u);
    const u32 ch = rf_att_chunk(end);
    rf_att_combine(p, t, h, (n + ch - 1) / ch);
}

// Per-token attention for head_dim D = 64, 128 or 256, the same chunks as attention_f16kv.
// A group of D / 8 lanes takes one key (8 dims, one 16-byte load of K and one of V per lane),
// so a warp has WARP_SIZE * 8 / D keys in flight, two steps at a time; each group keeps its
// own online softmax, merged across the warp by shuffles, then across the 4 warps in shared
// memory. A token with one chunk writes `out` directly. With more chunks each block writes its
// chunk and counts itself in `counters`; the last block of (t, h) merges the chunks in chunk
// order (attention_combine's arithmetic) and sets the counter back to zero. Without counters
// every block writes its chunk and attention_combine is launched after. A token's result
// depends only on its own keys (batch invariance).
template <int D> RF_DEVICE void attention_vec(const AttentionParams& p) {
    RF_PDL_WAIT();
    constexpr int G = D / 8;
    constexpr int KPW = WARP_SIZE / G;
    constexpr int KPB = KPW * ATT_WARPS;
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][D];
    __shared__ u32 s_last;
    const u32 t = blockIdx.x, h = blockIdx.y, c = blockIdx.z;
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int gi = lane / G, li = lane % G;
    const u32 seq = p.seq_of_token[t];
    u32 start, end;
    rf_att_range(p, t, &start, &end);
    const u32 ch = rf_att_chunk(end);
    const u32 chunks = (max(end, 1u) + ch - 1) / ch;
    if (c >= chunks) return;
    const u32 lo = max(start, c * ch), hi = min(end, (c + 1) * ch);
    const u32 g = h / (p.n_heads / p.n_kv_heads);
    const u32* table = p.block_tables + (u64)seq * p.max_blocks;
    const float4* q4 = (const float4*)(p.q + ((u64)t * p.n_heads + h) * D + li * 8);
    float qv[8], acc[8];
    {
        const float4 a = q4[0], b = q4[1];
        qv[0] = a.x; qv[1] = a.y; qv[2] = a.z; qv[3] = a.w;
        qv[4] = b.x; qv[5] = b.y; qv[6] = b.z; qv[7] = b.w;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) { qv[i] *= p.scale; acc[i] = 0.0f; }
    float m = -RF_INF, l = 0.0f;
    for (u32 base = lo + warp * KPW + gi; base < hi + gi; base += 2 * KPB) {
        uint4 kr[2], vr[2];
        bool ok[2];
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const u32 j = base + u * KPB;
            ok[u] = j < hi;
            kr[u].x = kr[u].y = kr[u].z = kr[u].w = 0;
            vr[u] = kr[u];
            if (ok[u]) {
                const u64 off = (((u64)table[j / KV_BLOCK] * p.n_kv_heads + g) * KV_BLOCK + j % KV_BLOCK) * D + li * 8;
                kr[u] = *(const uint4*)(p.k_cache + off);
                vr[u] = *(const uint4*)(p.v_cache + off);
            }
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const u32 kw[4] = {kr[u].x, kr[u].y, kr[u].z, kr[u].w};
            float s = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                s += qv[2 * i] * rf_h2f((u16)(kw[i] & 0xffffu));
                s += qv[2 * i + 1] * rf_h2f((u16)(kw[i] >> 16));
            }
#pragma unroll
            for (int o = G / 2; o > 0; o >>= 1) s += rf_shfl_xor(s, o);
            if (ok[u]) {
                if (p.softcap > 0.0f) s = p.softcap * tanhf(s / p.softcap);
                const float m2 = fmaxf(m, s);
                const float corr = expf(m - m2), w = expf(s - m2);
                l = l * corr + w;
                const u32 vw[4] = {vr[u].x, vr[u].y, vr[u].z, vr[u].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    acc[2 * i] = acc[2 * i] * corr + w * rf_h2f((u16)(vw[i] & 0xffffu));
                    acc[2 * i + 1] = acc[2 * i + 1] * corr + w * rf_h2f((u16)(vw[i] >> 16));
                }
                m = m2;
            }
        }
    }
    // merge the warp's groups (butterfly over the group index)
#pragma unroll
    for (int o = G; o < WARP_SIZE; o <<= 1) {
        const float mo = rf_shfl_xor(m, o), lo2 = rf_shfl_xor(l, o);
        const float M = fmaxf(m, mo);
        const float f = m == -RF_INF ? 0.0f : expf(m - M);
        const float fo = mo == -RF_INF ? 0.0f : expf(mo - M);
        l = l * f + lo2 * fo;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = acc[i] * f + rf_shfl_xor(acc[i], o) * fo;
        m = M;
    }
    if (lane == 0) { sm[warp] = m; sl[warp] = l; }
    if (gi == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) sacc[warp][li * 8 + i] = acc[i];
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
    if (p.counters != nullptr && chunks == 1) {
        const float inv = L > 0.0f ? 1.0f / L : 0.0f;
        float* out = p.out + ((u64)t * p.n_heads + h) * D;
        for (u32 d = threadIdx.x; d < D; d += blockDim.x) {
            float s = 0.0f;
#pragma unroll
            for (int w = 0; w < ATT_WARPS; w++) s += sacc[w][d] * f[w];
            out[d] = s * inv;
        }
        return;
    }
    const u64 slot = ((u64)t * p.n_heads + h) * ATT_MAX_CHUNKS + c;
    if (threadIdx.x == 0) {
        float2 ml;
        ml.x = M;
        ml.y = L;
        p.split_ml[slot] = ml;
    }
    float* o = p.split_o + slot * D;
    for (u32 d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < ATT_WARPS; w++) s += sacc[w][d] * f[w];
        o[d] = s;
    }
    if (p.counters == nullptr) return;
    __threadfence();
    __syncthreads();
    u32* counter = p.counters + (u64)t * p.n_heads + h;
    if (threadIdx.x == 0) s_last = atomicAdd(counter, 1u) == chunks - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    if (threadIdx.x == 0) *counter = 0;
    rf_att_combine(p, t, h, chunks);
}

RF_KERNEL void attention_vec_d64(const AttentionParams p) { attention_vec<64>(p); }
RF_KERNEL void attention_vec_d128(const AttentionParams p) { attention_vec<128>(p); }
RF_KERNEL void attention_vec_d256(const AttentionParams p) { attention_vec<256>(p); }

#define ATQ 16

RF_DEVICE uint2 rf_u2zero() {
    uint2 v;
    v.x = 0; v.y = 0;
    return v;
}

RF_DEVICE float4 rf_f4(float x, float y, float z, float w) {
    float4 v;
    v.x = x; v.y = y; v.z = z; v.w = w;
    return v;
}

template <int NG> RF_DEVICE void attention_tiled(const AttentionParams& p) {
    RF_PDL_WAIT();
    __shared__ float4 ks[KV_BLOCK][4 * NG], vs[KV_BLOCK][4 * NG];
    __shared__ u32 s_seq, s_lo, s_hi;
    const u32 h = blockIdx.y;
    const int qr = threadIdx.x % 4;
    const u32 t = blockIdx.x * ATQ + threadIdx.x / 4;
    const u32 groups = p.head_dim / 4;          // float4 groups per head, a multiple of 4
    const u32 g = h / (p.n_heads / p.n_kv_heads);
    const bool valid = t < p.tokens;
    u32 seq = 0, start = 0, end = 0;
    if (valid) {
        seq = p.seq_of_token[t];
        const u32 pos = p.positions[t], kv_len = p.kv_lens[seq];
        end = p.causal ? min(pos + 1, kv_len) : kv_len;
        start = (p.window > 0 && pos + 1 > p.window) ? pos + 1 - p.window : 0;
    }
    float4 qv[NG], acc[NG];
    const float4* q4 = (const float4*)(p.q + ((u64)(valid ? t : 0) * p.n_heads + h) * p.head_dim);
#pragma unroll
    for (int i = 0; i < NG; i++) {
        const u32 gi = qr + 4 * i;
        float4 v = rf_f4(0.0f, 0.0f, 0.0f, 0.0f);
        if (valid && gi < groups) {
            v = q4[gi];
            v.x *= p.scale; v.y *= p.scale; v.z *= p.scale; v.w *= p.scale;
        }
        qv[i] = v;
        acc[i] = rf_f4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float m = -RF_INF, l = 0.0f;
    bool done = !valid;
    for (;;) {
        __syncthreads();
        if (threadIdx.x == 0) { s_seq = 0xffffffffu; s_lo = 0xffffffffu; s_hi = 0; }
        __syncthreads();
        if (!done) atomicMin(&s_seq, seq);
        __syncthreads();
        const u32 S = s_seq;
        if (S == 0xffffffffu) break;
        const bool active = !done && seq == S;
        if (active && start < end) { atomicMin(&s_lo, start); atomicMax(&s_hi, end); }
        __syncthreads();
        const u32 hi = s_hi, lo = s_lo == 0xffffffffu ? hi : s_lo / KV_BLOCK * KV_BLOCK;
        const u32* table = p.block_tables + (u64)S * p.max_blocks;
        for (u32 j0 = lo; j0 < hi; j0 += KV_BLOCK) {
            const u64 off = ((u64)table[j0 / KV_BLOCK] * p.n_kv_heads + g) * KV_BLOCK * p.head_dim;
            const uint2* kb = (const uint2*)(p.k_cache + off);
            const uint2* vb = (const uint2*)(p.v_cache + off);
            for (u32 i = threadIdx.x; i < KV_BLOCK * groups; i += blockDim.x) {
                const u32 r = i / groups, c = i % groups;
                // Slots past the sequence's keys hold anything (NaN too): zeros instead, so that
                // a masked key's zero weight times its value stays zero.
                uint2 a = rf_u2zero(), b = rf_u2zero();
                if (j0 + r < hi) { a = kb[i]; b = vb[i]; }
                ks[r][c] = rf_f4(rf_h2f((u16)(a.x & 0xffff)), rf_h2f((u16)(a.x >> 16)),
                                       rf_h2f((u16)(a.y & 0xffff)), rf_h2f((u16)(a.y >> 16)));
                vs[r][c] = rf_f4(rf_h2f((u16)(b.x & 0xffff)), rf_h2f((u16)(b.x >> 16)),
                                       rf_h2f((u16)(b.y & 0xffff)), rf_h2f((u16)(b.y >> 16)));
            }
            __syncthreads();
            float s[KV_BLOCK];
            float mx = -RF_INF;
#pragma unroll
            for (int jj = 0; jj < KV_BLOCK; jj++) {
                float d = 0.0f;
#pragma unroll
                for (int i = 0; i < NG; i++) {
                    const u32 gi = qr + 4 * i;
                    if (gi < groups) {
                        const float4 k = ks[jj][gi];
                        d += qv[i].x * k.x + qv[i].y * k.y + qv[i].z * k.z + qv[i].w * k.w;
                    }
                }
                d += rf_shfl_xor(d, 1);
                d += rf_shfl_xor(d, 2);
                if (p.softcap > 0.0f) d = p.softcap * tanhf(d / p.softcap);
                const u32 j = j0 + jj;
                s[jj] = (active && j >= start && j < end) ? d : -RF_INF;
                mx = fmaxf(mx, s[jj]);
            }
            if (mx > -RF_INF) {
                const float m2 = fmaxf(m, mx);
                const float corr = expf(m - m2);
                float sum = 0.0f;
#pragma unroll
                for (int jj = 0; jj < KV_BLOCK; jj++) {
                    s[jj] = expf(s[jj] - m2);
                    sum += s[jj];
                }
                l = l * corr + sum;
#pragma unroll
                for (int i = 0; i < NG; i++) {
                    float4 a = acc[i];
                    a.x *= corr; a.y *= corr; a.z *= corr; a.w *= corr;
                    const u32 gi = qr + 4 * i;
                    if (gi < groups) {
#pragma unroll
                        for (int jj = 0; jj < KV_BLOCK; jj++) {
                            const float4 v = vs[jj][gi];
                            a.x += s[jj] * v.x; a.y += s[jj] * v.y; a.z += s[jj] * v.z; a.w += s[jj] * v.w;
                        }
                    }
                    acc[i] = a;
                }
                m = m2;
            }
            __syncthreads();
        }
        if (active) {
            const float inv = l > 0.0f ? 1.0f / l : 0.0f;
            float4* o = (float4*)(p.out + ((u64)t * p.n_heads + h) * p.head_dim);
#pragma unroll
            for (int i = 0; i < NG; i++) {
                const u32 gi = qr + 4 * i;
                if (gi < groups)
                    o[gi] = rf_f4(acc[i].x * inv, acc[i].y * inv, acc[i].z * inv, acc[i].w * inv);
            }
            done = true;
        }
    }
}

RF_KERNEL void attention_tiled_d64(const AttentionParams p) { attention_tiled<4>(p); }
RF_KERNEL void attention_tiled_d128(const AttentionParams p) { attention_tiled<8>(p); }
RF_KERNEL void attention_tiled_d256(const AttentionParams p) { attention_tiled<16>(p); }

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
    RF_PDL_WAIT();
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
    RF_PDL_WAIT();
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
    RF_PDL_WAIT();
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
