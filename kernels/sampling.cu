// sampling.cu: sort-free sampling of one token per row of logits, one block per row.
//
// The algorithm is the CPU sampler's (src/sampler/cpu.rs), step for step, so the same seed gives
// the same token on both:
//   1. penalties on the row's recent tokens, in place (restored before the kernel ends);
//   2. NaN or +inf anywhere -> status 1; every logit -inf -> status 2;
//   3. temperature 0 -> argmax (lowest id among ties);
//   4. integer weights W[i] = trunc(expf((l[i] - max) / T) * 2^40): sums are exact (u64) whatever
//      the reduction order, so block reductions match the CPU's sequential sums bit for bit;
//   5. rejection rounds with a rising pivot (FlashInfer's scheme), Philox 4x32-10 for the bits:
//      round r: t = (q * bits_r) >> 32; candidate c = first token in vocabulary order with
//      W > pivot whose inclusive running sum over such tokens exceeds t; accept if c passes
//      top-k (count of W > W[c] < k), top-p (mass of W > W[c] < top_p * total) and min-p
//      (W[c] >= min_p * 2^40), else pivot = W[c], q = mass of W > W[c].
// Arithmetic that must match the CPU bit for bit uses the _rn intrinsics (no FMA contraction).
#include "compat.h"

#define RF_SAMPLE_ITEMS 4          // consecutive tokens per thread per chunk
#define RF_SAMPLE_MAX_THREADS 1024 // block size upper bound (shared scan array)
#define RF_SAMPLE_MAX_WINDOW 1024  // penalty window upper bound (shared save array)
#define RF_SAMPLE_MAX_ROUNDS 64
#define RF_WEIGHT_ONE 1099511627776.0f  // 2^40

// Per-row parameters (64 bytes), mirrored by GpuRowParams in src/sampler/gpu.rs.
struct RowParams {
    float temperature;        // 0 = greedy
    u32 top_k;                // 0 or >= vocab = off
    float top_p;              // 1 = off
    float min_p;              // 0 = off
    float repeat_penalty;     // 1 = off
    float presence_penalty;
    float frequency_penalty;
    u32 recent_offset;        // first of this row's penalty window in `recent`
    u32 recent_len;           // window length (<= RF_SAMPLE_MAX_WINDOW); 0 = no penalties
    u32 pad;
    u64 seed;
    u64 seq_id;
    u64 step;
};

struct SampleArgs {
    float* logits;            // [batch, row_stride]; penalized entries restored on return
    const RowParams* rows;    // [batch]
    const u32* recent;        // concatenated penalty windows (token ids < vocab)
    u32* tokens;              // [batch] out: the token, or 0xFFFFFFFF with a nonzero status
    u32* status;              // [batch] out: 0 ok, 1 NaN/+inf logit, 2 every logit -inf
    u32 batch;
    u32 vocab;
    u64 row_stride;           // floats between rows
};

// ---- Philox 4x32-10 (Salmon et al. 2011; constants of Random123) ----
RF_DEVICE void rf_philox(u32 c[4], u32 k0, u32 k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r > 0) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        const u64 p0 = (u64)0xD2511F53u * c[0];
        const u64 p1 = (u64)0xCD9E8D57u * c[2];
        const u32 n0 = (u32)(p1 >> 32) ^ c[1] ^ k0;
        const u32 n2 = (u32)(p0 >> 32) ^ c[3] ^ k1;
        c[0] = n0; c[1] = (u32)p1; c[2] = n2; c[3] = (u32)p0;
    }
}

// The 32 bits of rejection round `round`: counter (round/4, step, seq_id lo, seq_id hi), key seed.
RF_DEVICE u32 rf_round_bits(u64 seed, u64 seq_id, u64 step, u32 round) {
    u32 c[4] = {round / 4u, (u32)step, (u32)seq_id, (u32)(seq_id >> 32)};
    rf_philox(c, (u32)seed, (u32)(seed >> 32));
    return c[round % 4u];
}

// ---- block reductions over u64 / u32 (every thread gets the result) ----
RF_DEVICE u64 rf_shfl_xor_u64(u64 v, int m) {
    const u32 lo = (u32)rf_shfl_xor_i((int)(u32)v, m);
    const u32 hi = (u32)rf_shfl_xor_i((int)(u32)(v >> 32), m);
    return ((u64)hi << 32) | lo;
}

RF_DEVICE u64 rf_block_sum_u64(u64 v, u64* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v += rf_shfl_xor_u64(v, m);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0ull;
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v += rf_shfl_xor_u64(v, m);
    return v;
}

// Largest value, lowest index among equals. Every thread gets both.
RF_DEVICE void rf_block_argmax(float& v, u32& idx, float* sv, u32* si) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) {
        const float ov = rf_shfl_xor(v, m);
        const u32 oi = (u32)rf_shfl_xor_i((int)idx, m);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
    __syncthreads();
    if (lane == 0) { sv[warp] = v; si[warp] = idx; }
    __syncthreads();
    v = lane < nwarps ? sv[lane] : -RF_INF;
    idx = lane < nwarps ? si[lane] : 0xFFFFFFFFu;
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) {
        const float ov = rf_shfl_xor(v, m);
        const u32 oi = (u32)rf_shfl_xor_i((int)idx, m);
        if (ov > v || (ov == v && oi < idx)) { v = ov; idx = oi; }
    }
}

RF_DEVICE u64 rf_weight(float l, float max, float temperature) {
    const float x = __fdiv_rn(__fsub_rn(l, max), temperature);
    return (u64)(expf(x) * RF_WEIGHT_ONE);
}

RF_DEVICE float rf_penalize(float l, u32 count, const RowParams& p) {
    l = l <= 0.0f ? __fmul_rn(l, p.repeat_penalty) : __fdiv_rn(l, p.repeat_penalty);
    const float pen = __fadd_rn(__fmul_rn((float)count, p.frequency_penalty), p.presence_penalty);
    return __fsub_rn(l, pen);
}

// Whether window entry j is the first occurrence of its token; its count in the window.
RF_DEVICE bool rf_first_occurrence(const u32* win, u32 n, u32 j, u32& count) {
    const u32 tok = win[j];
    bool first = true;
    count = 0;
    for (u32 k = 0; k < n; ++k) {
        if (win[k] == tok) {
            ++count;
            if (k < j) first = false;
        }
    }
    return first;
}

// First token (vocabulary order) with W > pivot whose inclusive running sum of such W exceeds t.
RF_DEVICE u32 rf_inverse_cdf(const float* l, u32 vocab, float max, float temp, u64 pivot, u64 t,
                             u64* scan, u64* red, u32* found) {
    const u32 chunk = blockDim.x * RF_SAMPLE_ITEMS;
    u64 cum = 0;
    for (u32 base = 0; base < vocab; base += chunk) {
        const u32 start = base + threadIdx.x * RF_SAMPLE_ITEMS;
        u64 w[RF_SAMPLE_ITEMS];
        u64 s = 0;
#pragma unroll
        for (int j = 0; j < RF_SAMPLE_ITEMS; ++j) {
            const u32 i = start + j;
            u64 x = i < vocab ? rf_weight(l[i], max, temp) : 0ull;
            w[j] = x > pivot ? x : 0ull;
            s += w[j];
        }
        const u64 total = rf_block_sum_u64(s, red);
        if (cum + total > t) {
            // Inclusive scan of the per-thread sums (Hillis-Steele in shared memory).
            scan[threadIdx.x] = s;
            __syncthreads();
            for (u32 off = 1; off < blockDim.x; off <<= 1) {
                const u64 add = threadIdx.x >= off ? scan[threadIdx.x - off] : 0ull;
                __syncthreads();
                scan[threadIdx.x] += add;
                __syncthreads();
            }
            const u64 incl = cum + scan[threadIdx.x];
            u64 run = incl - s;
            if (run <= t && incl > t) {
#pragma unroll
                for (int j = 0; j < RF_SAMPLE_ITEMS; ++j) {
                    run += w[j];
                    if (w[j] > 0 && run > t) { *found = start + j; break; }
                }
            }
            __syncthreads();
            const u32 c = *found;
            __syncthreads();
            return c;
        }
        cum += total;
    }
    return 0xFFFFFFFFu;  // unreachable while t < the sum of W > pivot
}

RF_KERNEL void sample_rows(const SampleArgs a) {
    RF_PDL_WAIT();
    __shared__ u64 s_scan[RF_SAMPLE_MAX_THREADS];
    __shared__ float s_saved[RF_SAMPLE_MAX_WINDOW];
    __shared__ u64 s_red[32];
    __shared__ float s_fv[32];
    __shared__ u32 s_iv[32];
    __shared__ u32 s_found;
    const u32 row = blockIdx.x;
    if (row >= a.batch) return;
    const RowParams p = a.rows[row];
    float* l = a.logits + (u64)row * a.row_stride;
    const u32 vocab = a.vocab;
    const u32* win = a.recent + p.recent_offset;
    const u32 nwin = p.recent_len;

    // 1. Penalties, in place; each distinct token once (its first occurrence in the window).
    for (u32 j = threadIdx.x; j < nwin; j += blockDim.x) {
        u32 count;
        if (rf_first_occurrence(win, nwin, j, count) && win[j] < vocab) {
            s_saved[j] = l[win[j]];
            l[win[j]] = rf_penalize(s_saved[j], count, p);
        }
    }
    __syncthreads();

    // 2. NaN/+inf check, max and argmax (the first index of the max). Rows on 16-byte
    // boundaries are read as float4, four loads in flight per thread: one block scans the whole
    // vocabulary, and single-float loads one at a time left it latency-bound (~70 µs for 152k).
    float mv = -RF_INF;
    u32 mi = 0xFFFFFFFFu;
    int bad = 0;
    u32 scalar_from = 0;
    if ((((u64)l) & 15u) == 0) {
        const float4* l4 = (const float4*)l;
        const u32 n4 = vocab / 4, bd = blockDim.x;
        u32 i = threadIdx.x;
        for (; i + 3 * bd < n4; i += 4 * bd) {
            float4 x[4];
#pragma unroll
            for (int u = 0; u < 4; u++) x[u] = l4[i + u * bd];
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float e[4] = {x[u].x, x[u].y, x[u].z, x[u].w};
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const u32 idx = 4 * (i + u * bd) + k;
                    if (e[k] != e[k] || e[k] == RF_INF) bad = 1;
                    if (e[k] > mv || (e[k] == mv && idx < mi)) { mv = e[k]; mi = idx; }
                }
            }
        }
        for (; i < n4; i += bd) {
            const float4 x = l4[i];
            const float e[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const u32 idx = 4 * i + k;
                if (e[k] != e[k] || e[k] == RF_INF) bad = 1;
                if (e[k] > mv || (e[k] == mv && idx < mi)) { mv = e[k]; mi = idx; }
            }
        }
        scalar_from = 4 * n4;
    }
    for (u32 i = scalar_from + threadIdx.x; i < vocab; i += blockDim.x) {
        const float x = l[i];
        if (x != x || x == RF_INF) bad = 1;
        if (x > mv || (x == mv && i < mi)) { mv = x; mi = i; }
    }
    bad = __syncthreads_or(bad);
    rf_block_argmax(mv, mi, s_fv, s_iv);

    u32 token = 0xFFFFFFFFu;
    u32 status = 0;
    if (bad) {
        status = 1;
    } else if (mv == -RF_INF) {
        status = 2;
    } else if (p.temperature == 0.0f) {
        token = mi;
    } else {
        const float T = p.temperature;
        // 3. Total weight.
        u64 s = 0;
        for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) s += rf_weight(l[i], mv, T);
        const u64 total = rf_block_sum_u64(s, s_red);
        const u32 k = p.top_k < vocab ? p.top_k : 0u;
        const bool use_p = p.top_p < 1.0f, use_min = p.min_p > 0.0f;
        const double p_mass = (double)p.top_p * (double)total;
        const double min_w = (double)p.min_p * 1099511627776.0;
        // 4. Rejection rounds.
        u64 pivot = 0, q = total;
        token = mi;  // after RF_SAMPLE_MAX_ROUNDS rounds (never seen): the argmax
        for (u32 r = 0; r < RF_SAMPLE_MAX_ROUNDS; ++r) {
            const u32 bits = rf_round_bits(p.seed, p.seq_id, p.step, r);
            const u64 t = __umul64hi(q, (u64)bits << 32);  // (q * bits) >> 32
            const u32 c = rf_inverse_cdf(l, vocab, mv, T, pivot, t, s_scan, s_red, &s_found);
            if (c >= vocab) { token = mi; break; }
            if (k == 0 && !use_p && !use_min) { token = c; break; }
            const u64 wc = rf_weight(l[c], mv, T);
            u64 mass = 0, cnt = 0;
            for (u32 i = threadIdx.x; i < vocab; i += blockDim.x) {
                const u64 x = rf_weight(l[i], mv, T);
                if (x > wc) { mass += x; cnt += 1; }
            }
            mass = rf_block_sum_u64(mass, s_red);
            cnt = rf_block_sum_u64(cnt, s_red);
            const bool ok = (k == 0 || cnt < (u64)k) && (!use_p || (double)mass < p_mass) &&
                            (!use_min || (double)wc >= min_w);
            if (ok) { token = c; break; }
            pivot = wc;
            q = mass;
        }
    }
    __syncthreads();

    // 5. Restore the penalized logits.
    for (u32 j = threadIdx.x; j < nwin; j += blockDim.x) {
        u32 count;
        if (rf_first_occurrence(win, nwin, j, count) && win[j] < vocab) l[win[j]] = s_saved[j];
    }
    if (threadIdx.x == 0) {
        a.tokens[row] = token;
        a.status[row] = status;
    }
}
