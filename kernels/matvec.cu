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
    u32 rows_per_warp;  // 1..MV_ROWS
};

// Each warp computes rows_per_warp (<= MV_ROWS) rows, so every x chunk it loads serves that many
// weight chunks (x is read from L1/L2 once per rows_per_warp rows instead of once per row). Large
// matrices use 4; small ones 1, to spread over more warps.
#define MV_ROWS 4

template <int T> RF_DEVICE void matvec(const MatvecParams& p) {
    RF_PDL_WAIT();
    const int lane = threadIdx.x % WARP_SIZE;
    const u32 rpw = p.rows_per_warp;
    const u32 row0 = (blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE) * rpw;
    if (row0 >= p.rows) return;
    const float* x = p.x + (u64)blockIdx.y * p.x_stride;
    const int nchunks = p.cols / 32;
    float acc[MV_ROWS];
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++) acc[r] = 0.0f;
    for (int ch = lane; ch < nchunks; ch += WARP_SIZE) {
        float xv[32];
        const float4* x4 = (const float4*)(x + 32 * ch);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 f = x4[i];
            xv[4 * i] = f.x; xv[4 * i + 1] = f.y; xv[4 * i + 2] = f.z; xv[4 * i + 3] = f.w;
        }
#pragma unroll
        for (int r = 0; r < MV_ROWS; r++) {
            if (r < rpw && row0 + r < p.rows) {
                float v[32];
                rf_deq_row_chunk<T>(p.w + (u64)(row0 + r) * p.row_bytes, ch, v);
                float s = 0.0f;
#pragma unroll
                for (int i = 0; i < 32; i++) s += v[i] * xv[i];
                acc[r] += s;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < MV_ROWS; r++) {
        const float a = rf_warp_sum(acc[r]);
        if (lane == 0 && r < rpw && row0 + r < p.rows)
            p.y[(u64)blockIdx.y * p.y_stride + row0 + r] = a + (p.bias ? p.bias[row0 + r] : 0.0f);
    }
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
    RF_PDL_WAIT();
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

// ---------------------------------------------------------------------------------------------
// Integer path ("mmvq", v4): x is quantized once per product to Q8_1 blocks of 32 (int8 values
// plus a float scale d and d * sum(q)), stored as two planes: xq [n][cols] int8 and xds
// [n][cols/32] float2, so a lane loads the 16 or 32 x bytes it needs with aligned 16-byte loads.
// Weights are dotted with 4-byte integer dot products (rf_dp4a) and scaled per block. A "slice" is
// the piece of a block one lane handles at a time (32 to 128 weights, every weight byte it loads
// used once). Blocks whose size is not a multiple of 4 bytes (Q4_0, Q5_0, Q8_0, Q3_K, Q6_K) are
// read as aligned 4-byte words and realigned with a funnel shift.

// Q8_1 quantization of n*cols floats (cols a multiple of 32), 4 per thread, 8 threads per block.
struct QuantizeParams {
    const float* x;  // [total]
    i8* xq;          // [total]
    float2* xds;     // [total / 32]
    u32 total;       // a multiple of 32
};

// A hint to bring the 128-byte line at p into L2 (no-op where there is no such instruction).
RF_DEVICE void rf_prefetch_l2(const void* p) {
#if defined(RF_CUDA)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}
// Q8_1-quantizes 4 values per thread (8 threads per 32-block, 8-lane aligned groups); returns the
// 4 int8 values packed and, in *ds, the block's (d, d * sum q) (valid in every lane of the group).
RF_DEVICE u32 rf_q8_1_x4(float4 v, float2* ds) {
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
    for (int m = 1; m < 8; m <<= 1) amax = fmaxf(amax, rf_shfl_xor(amax, m));
    const float d = amax / 127.0f;
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int q0 = (int)rintf(v.x * id), q1 = (int)rintf(v.y * id);
    const int q2 = (int)rintf(v.z * id), q3 = (int)rintf(v.w * id);
    int s = q0 + q1 + q2 + q3;
#pragma unroll
    for (int m = 1; m < 8; m <<= 1) s += rf_shfl_xor_i(s, m);
    ds->x = d;
    ds->y = d * (float)s;
    return (u32)(q0 & 0xFF) | ((u32)(q1 & 0xFF) << 8) | ((u32)(q2 & 0xFF) << 16) |
           ((u32)(q3 & 0xFF) << 24);
}

RF_KERNEL void quantize_q8_1(const QuantizeParams p) {
    RF_PDL_WAIT();
    const u32 i4 = blockIdx.x * blockDim.x + threadIdx.x;
    const bool ok = 4 * i4 < p.total;  // whole groups of 8 threads share one fate
    float4 v;
    v.x = v.y = v.z = v.w = 0.0f;
    if (ok) v = ((const float4*)p.x)[i4];
    float2 ds;
    const u32 q = rf_q8_1_x4(v, &ds);
    if (!ok) return;
    ((u32*)p.xq)[i4] = q;
    if (i4 % 8 == 0) p.xds[i4 / 8] = ds;
}

// N 4-byte words from a 2-byte aligned address: aligned loads, realigned by a funnel shift (when
// p is 2 mod 4, the run's last 2 bytes come from a 2-byte load, so nothing past it is read).
template <int N> RF_DEVICE void rf_ld_run(const u8* p, int* out) {
    const u32* a = (const u32*)((u64)p & ~(u64)3);
    const u32 sh = ((u32)(u64)p & 3u) * 8u;
    u32 w[N + 1];
#pragma unroll
    for (int i = 0; i < N; i++) w[i] = a[i];
    w[N] = sh ? (u32)(*(const u16*)(a + N)) : 0u;
#pragma unroll
    for (int i = 0; i < N; i++) out[i] = (int)(u32)((((u64)w[i + 1] << 32) | w[i]) >> sh);
}
// N words from a 4-byte aligned address.
template <int N> RF_DEVICE void rf_ld_words(const u8* p, int* out) {
#pragma unroll
    for (int i = 0; i < N; i++) out[i] = ((const int*)p)[i];
}
// 16 x bytes (aligned) as 4 words.
RF_DEVICE void rf_ld_x16(const i8* p, int* v) {
    const int4 a = *(const int4*)p;
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
}
RF_DEVICE u16 rf_ld_u16(const u8* p) { return *(const u16*)p; }
RF_DEVICE float rf_h2f_lo(u32 w) { return rf_h2f((u16)(w & 0xFFFF)); }
RF_DEVICE float rf_h2f_hi(u32 w) { return rf_h2f((u16)(w >> 16)); }
// Bit i (0..3) of v to bit 4 of byte i.
RF_DEVICE int rf_spread4(int v) {
    return ((v << 4) & 0x10) | ((v << 11) & 0x1000) | ((v << 18) & 0x100000) | ((v << 25) & 0x10000000);
}
#define RF_ONES 0x01010101

// Per type: SE weights per slice, SPB slices per block, and
//   dot(block, slice, xq, xds, xs, dss, nb, acc): acc[b] += slice . x[b] for b < nb, where xq and
//   xds point at the block's first x value / Q8_1 block of batch row 0 and xs, dss step rows.
template <int T> struct Mmvq;

template <> struct Mmvq<RF_Q8_0> {
    enum { SE = 32, SPB = 1 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int, const i8* xq, const float2* xds,
                                                u32 xs, u32 dss, int nb, float* acc) {
        int q[8];
        rf_ld_run<8>(b + 2, q);
        const float d = rf_h2f(rf_ld_u16(b));
#pragma unroll
        for (int r = 0; r < NB; r++) {
            if (r < nb) {
                int x[8];
                rf_ld_x16(xq + r * xs, x);
                rf_ld_x16(xq + r * xs + 16, x + 4);
                int s = 0;
#pragma unroll
                for (int i = 0; i < 8; i++) s = rf_dp4a(q[i], x[i], s);
                acc[r] += d * xds[r * dss].x * (float)s;
            }
        }
    }
};

// 4-bit and 5-bit 32-blocks: lo nibbles are values 0..15, hi nibbles 16..31.
// q holds the 4 quant words, h the 5th bits (or 0); min: m (w = d q + m) or -off*d (w = d (q-off)).
template <int NB> RF_DEVICE void rf_dot_q32(const int* q, u32 h, float d, float m, const i8* xq,
                                            const float2* xds, u32 xs, u32 dss, int nb, float* acc) {
    int lo[4], hi[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        lo[i] = (q[i] & 0x0F0F0F0F) | rf_spread4((int)(h >> (4 * i)));
        hi[i] = ((q[i] >> 4) & 0x0F0F0F0F) | rf_spread4((int)(h >> (16 + 4 * i)));
    }
#pragma unroll
    for (int r = 0; r < NB; r++) {
        if (r < nb) {
            int x[8];
            rf_ld_x16(xq + r * xs, x);
            rf_ld_x16(xq + r * xs + 16, x + 4);
            int s = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) s = rf_dp4a(hi[i], x[i + 4], rf_dp4a(lo[i], x[i], s));
            const float2 ds = xds[r * dss];
            acc[r] += d * ds.x * (float)s + m * ds.y;
        }
    }
}

template <> struct Mmvq<RF_Q4_0> {  // d, qs[16]; 18 bytes
    enum { SE = 32, SPB = 1 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int, const i8* xq, const float2* xds,
                                                u32 xs, u32 dss, int nb, float* acc) {
        int q[4];
        rf_ld_run<4>(b + 2, q);
        const float d = rf_h2f(rf_ld_u16(b));
        rf_dot_q32<NB>(q, 0u, d, -8.0f * d, xq, xds, xs, dss, nb, acc);
    }
};
template <> struct Mmvq<RF_Q4_1> {  // d, m, qs[16]; 20 bytes, 4-aligned
    enum { SE = 32, SPB = 1 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int, const i8* xq, const float2* xds,
                                                u32 xs, u32 dss, int nb, float* acc) {
        int q[5];
        rf_ld_words<5>(b, q);
        rf_dot_q32<NB>(q + 1, 0u, rf_h2f_lo(q[0]), rf_h2f_hi(q[0]), xq, xds, xs, dss, nb, acc);
    }
};
template <> struct Mmvq<RF_Q5_0> {  // d, qh[4], qs[16]; 22 bytes
    enum { SE = 32, SPB = 1 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int, const i8* xq, const float2* xds,
                                                u32 xs, u32 dss, int nb, float* acc) {
        int q[5];
        rf_ld_run<5>(b + 2, q);
        const float d = rf_h2f(rf_ld_u16(b));
        rf_dot_q32<NB>(q + 1, (u32)q[0], d, -16.0f * d, xq, xds, xs, dss, nb, acc);
    }
};
template <> struct Mmvq<RF_Q5_1> {  // d, m, qh[4], qs[16]; 24 bytes, 8-aligned
    enum { SE = 32, SPB = 1 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int, const i8* xq, const float2* xds,
                                                u32 xs, u32 dss, int nb, float* acc) {
        int q[6];
        rf_ld_words<6>(b, q);
        rf_dot_q32<NB>(q + 2, (u32)q[1], rf_h2f_lo(q[0]), rf_h2f_hi(q[0]), xq, xds, xs, dss, nb,
                       acc);
    }
};

// Q2_K: scales[16], qs[64], d, dmin; 84 bytes, 4-aligned. Slice = half h (chunks 4h..4h+3):
// qs[32h..32h+32], 2 bits per chunk; a scale byte (lo: scale, hi: min) per 16 values.
template <> struct Mmvq<RF_Q2_K> {
    enum { SE = 128, SPB = 2 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int h, const i8* xq,
                                                const float2* xds, u32 xs, u32 dss, int nb,
                                                float* acc) {
        int q[8], sc[2];
        rf_ld_words<8>(b + 16 + 32 * h, q);
        rf_ld_words<2>(b + 8 * h, sc);
        const u32 dd = *(const u32*)(b + 80);
        const float d = rf_h2f_lo(dd), dmin = rf_h2f_hi(dd);
        xq += 128 * h;
        xds += 4 * h;
#pragma unroll
        for (int r = 0; r < NB; r++) {
            if (r < nb) {
                float a = 0.0f;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int x[8];
                    rf_ld_x16(xq + r * xs + 32 * j, x);
                    rf_ld_x16(xq + r * xs + 32 * j + 16, x + 4);
                    float cj = 0.0f;
#pragma unroll
                    for (int t = 0; t < 2; t++) {
                        int s = 0, sx = 0;
#pragma unroll
                        for (int i = 4 * t; i < 4 * t + 4; i++) {
                            s = rf_dp4a((q[i] >> (2 * j)) & 0x03030303, x[i], s);
                            sx = rf_dp4a(RF_ONES, x[i], sx);
                        }
                        const int scb = (sc[j / 2] >> (8 * (2 * (j % 2) + t))) & 0xFF;
                        cj += d * (float)(scb & 0xF) * (float)s - dmin * (float)(scb >> 4) * (float)sx;
                    }
                    a += xds[r * dss + j].x * cj;
                }
                acc[r] += a;
            }
        }
    }
};

// Q3_K: hmask[32], qs[64], scales[12], d; 110 bytes. Slice = half h (chunks c = 4h+j): 2 low bits
// from qs[32h + l] >> 2j, value - 4 where hmask[l] bit c is clear; 6-bit signed scale per 16.
template <> struct Mmvq<RF_Q3_K> {
    enum { SE = 128, SPB = 2 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int h, const i8* xq,
                                                const float2* xds, u32 xs, u32 dss, int nb,
                                                float* acc) {
        int q[8], hm[8], sc[3];
        rf_ld_run<8>(b + 32 + 32 * h, q);
        rf_ld_run<8>(b, hm);
        rf_ld_run<3>(b + 96, sc);
        const float d = rf_h2f(rf_ld_u16(b + 108));
        xq += 128 * h;
        xds += 4 * h;
#pragma unroll
        for (int r = 0; r < NB; r++) {
            if (r < nb) {
                float a = 0.0f;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int c = 4 * h + j;
                    int x[8];
                    rf_ld_x16(xq + r * xs + 32 * j, x);
                    rf_ld_x16(xq + r * xs + 32 * j + 16, x + 4);
                    int cj = 0;
#pragma unroll
                    for (int t = 0; t < 2; t++) {
                        int s = 0, sx = 0;
#pragma unroll
                        for (int i = 4 * t; i < 4 * t + 4; i++) {
                            const int v = ((q[i] >> (2 * j)) & 0x03030303) | (((hm[i] >> c) & RF_ONES) << 2);
                            s = rf_dp4a(v, x[i], s);
                            sx = rf_dp4a(RF_ONES, x[i], sx);
                        }
                        // scale 2c + t = 8h + k: low 4 bits in byte k (h = 0) or its high
                        // nibble (h = 1), high 2 bits in byte 8 + k % 4 at bit 2 (2h + k / 4).
                        const int k = 2 * j + t;
                        const int lo = (sc[k / 4] >> (8 * (k % 4) + 4 * h)) & 0xF;
                        const int hi = (sc[2] >> (8 * (k % 4) + 2 * (2 * h + k / 4))) & 3;
                        cj += ((lo | (hi << 4)) - 32) * (s - 4 * sx);
                    }
                    a += xds[r * dss + j].x * (float)cj;
                }
                acc[r] += d * a;
            }
        }
    }
};

// Q4_K: d, dmin, scales[12], qs[128]; 144 bytes, 16-aligned. Slice sl (0..7) = qs[16 sl..+16]:
// chunk pair p = sl/2 (lo nibbles: chunk 2p, hi: 2p+1), positions l in 16i..16i+16 (i = sl%2), one
// 16-byte load. The 6-bit scales and mins of chunks 2p, 2p+1 are the bytes of one 16-bit field of
// the scale words (ggml's get_scale_min_k4 for a pair, branch-free). A chunk's min term uses the
// x sum of all 32 values (ds.y), so only the i = 0 lane adds it.
// xds must be 16-byte aligned at each 256-value block (both x layouts are: cols % 256 == 0).
template <int NB> RF_DEVICE void rf_dot_q4k(const u8* b, int sl, const i8* xq, const float2* xds,
                                            u32 xs, u32 dss, int nb, float* acc) {
    const int p = sl >> 1, i = sl & 1;
    const int4 qv = *(const int4*)(b + 16 + 16 * sl);
    const int4 h = *(const int4*)b;  // d, dmin, scales[0..12)
    const float d = rf_h2f_lo(h.x), dmin = i ? 0.0f : rf_h2f_hi(h.x);
    const int sh = 16 * (p & 1);
    const u32 s0 = (u32)h.y >> sh, s1 = (u32)h.z >> sh, s2 = (u32)h.w >> sh;
    const u32 sc = p < 2 ? s0 & 0x3F3F : (s2 & 0x0F0F) | ((s0 >> 2) & 0x3030);
    const u32 mm = p < 2 ? s1 & 0x3F3F : ((s2 >> 4) & 0x0F0F) | ((s1 >> 2) & 0x3030);
    const int sc0 = sc & 0xFF, sc1 = sc >> 8, m0 = mm & 0xFF, m1 = mm >> 8;
    const int q[4] = {qv.x, qv.y, qv.z, qv.w};
    int lo[4], hi[4];
#pragma unroll
    for (int m = 0; m < 4; m++) {
        lo[m] = q[m] & 0x0F0F0F0F;
        hi[m] = (q[m] >> 4) & 0x0F0F0F0F;
    }
    xq += 64 * p + 16 * i;
    xds += 2 * p;
#pragma unroll
    for (int r = 0; r < NB; r++) {
        if (r < nb) {
            int xa[4], xb[4];
            rf_ld_x16(xq + r * xs, xa);
            rf_ld_x16(xq + r * xs + 32, xb);
            int t0 = 0, t1 = 0;
#pragma unroll
            for (int m = 0; m < 4; m++) {
                t0 = rf_dp4a(lo[m], xa[m], t0);
                t1 = rf_dp4a(hi[m], xb[m], t1);
            }
            const float4 ds = *(const float4*)(xds + r * dss);  // chunks 2p, 2p+1
            acc[r] += d * ((float)(sc0 * t0) * ds.x + (float)(sc1 * t1) * ds.z) -
                      dmin * ((float)m0 * ds.y + (float)m1 * ds.w);
        }
    }
}
template <> struct Mmvq<RF_Q4_K> {
    enum { SE = 32, SPB = 8 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int sl, const i8* xq,
                                                const float2* xds, u32 xs, u32 dss, int nb,
                                                float* acc) {
        rf_dot_q4k<NB>(b, sl, xq, xds, xs, dss, nb, acc);
    }
};
// The 6-bit scale and min of sub-block j (0..7) from the 12 scale bytes as 3 words s0, s1, s2
// (ggml's get_scale_min_k4; j may be a run-time value: only shift amounts depend on it).
RF_DEVICE void rf_scale_min_k4_w(int j, u32 s0, u32 s1, u32 s2, int* sc, int* m) {
    if (j < 4) {
        const int sh = 8 * j;
        *sc = (int)((s0 >> sh) & 63);
        *m = (int)((s1 >> sh) & 63);
    } else {
        const int sh = 8 * (j - 4);
        *sc = (int)(((s2 >> sh) & 0xF) | (((s0 >> sh) >> 6 & 3) << 4));
        *m = (int)(((s2 >> sh) >> 4 & 0xF) | (((s1 >> sh) >> 6 & 3) << 4));
    }
}

// Q4_K / Q5_K: d, dmin, scales[12], (Q5_K: qh[32]), qs[128]; 144 / 176 bytes, 16-aligned.
// Slice = chunk pair p (chunks 2p: lo nibbles, 2p+1: hi nibbles of qs[32p..32p+32]). Q5_K only
// now: rf_dot_q4k's layout with Q5_K's 5th bits measured slower at batch 1 (H100, 22016x4096:
// 30.2 vs 25.8 us; 4096x4096: 7.3 vs 7.5), though 1.3-1.6x faster at batch 2-8.
template <int NB, bool Q5> RF_DEVICE void rf_dot_k45(const u8* b, int p, const i8* xq,
                                                     const float2* xds, u32 xs, u32 dss, int nb,
                                                     float* acc) {
    int q[8], qh[8], hd[4];
    const int4* q4 = (const int4*)(b + (Q5 ? 48 : 16) + 32 * p);
    const int4 qa = q4[0], qb = q4[1];
    q[0] = qa.x; q[1] = qa.y; q[2] = qa.z; q[3] = qa.w;
    q[4] = qb.x; q[5] = qb.y; q[6] = qb.z; q[7] = qb.w;
    const int4 h = *(const int4*)b;  // d, dmin, scales[0..12)
    hd[0] = h.x; hd[1] = h.y; hd[2] = h.z; hd[3] = h.w;
    if (Q5) {
        const int4* h4 = (const int4*)(b + 16);
        const int4 ha = h4[0], hb = h4[1];
        qh[0] = ha.x; qh[1] = ha.y; qh[2] = ha.z; qh[3] = ha.w;
        qh[4] = hb.x; qh[5] = hb.y; qh[6] = hb.z; qh[7] = hb.w;
    }
    const float d = rf_h2f_lo(hd[0]), dmin = rf_h2f_hi(hd[0]);
    int sc0, m0, sc1, m1;
    rf_scale_min_k4_w(2 * p, hd[1], hd[2], hd[3], &sc0, &m0);
    rf_scale_min_k4_w(2 * p + 1, hd[1], hd[2], hd[3], &sc1, &m1);
    int lo[8], hi[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        lo[i] = q[i] & 0x0F0F0F0F;
        hi[i] = (q[i] >> 4) & 0x0F0F0F0F;
        if (Q5) {
            lo[i] |= ((qh[i] >> (2 * p)) & RF_ONES) << 4;
            hi[i] |= ((qh[i] >> (2 * p + 1)) & RF_ONES) << 4;
        }
    }
    xq += 64 * p;
    xds += 2 * p;
#pragma unroll
    for (int r = 0; r < NB; r++) {
        if (r < nb) {
            int x[16];
            rf_ld_x16(xq + r * xs, x);
            rf_ld_x16(xq + r * xs + 16, x + 4);
            rf_ld_x16(xq + r * xs + 32, x + 8);
            rf_ld_x16(xq + r * xs + 48, x + 12);
            int s0 = 0, s1 = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                s0 = rf_dp4a(lo[i], x[i], s0);
                s1 = rf_dp4a(hi[i], x[i + 8], s1);
            }
            const float2 a = xds[r * dss], c = xds[r * dss + 1];
            acc[r] += d * ((float)(sc0 * s0) * a.x + (float)(sc1 * s1) * c.x) -
                      dmin * ((float)m0 * a.y + (float)m1 * c.y);
        }
    }
}
template <> struct Mmvq<RF_Q5_K> {
    enum { SE = 64, SPB = 4 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int p, const i8* xq,
                                                const float2* xds, u32 xs, u32 dss, int nb,
                                                float* acc) {
        rf_dot_k45<NB, true>(b, p, xq, xds, xs, dss, nb, acc);
    }
};

// 16 bytes at a + o (a 8-byte aligned, o even, < 8) as 4 words: three aligned 8-byte loads (all
// in the 24 bytes from a), the words picked and funnel-shifted by o.
RF_DEVICE void rf_ld16_al8(const u8* a, u32 o, int* out) {
    const int2 A = *(const int2*)a, B = *(const int2*)(a + 8), C = *(const int2*)(a + 16);
    const u32 W[6] = {(u32)A.x, (u32)A.y, (u32)B.x, (u32)B.y, (u32)C.x, (u32)C.y};
    const u32 s = (o & 3u) * 8u;
    const bool w1 = (o & 4u) != 0;
    u32 V[5];
#pragma unroll
    for (int t = 0; t < 5; t++) V[t] = w1 ? W[t + 1] : W[t];
#pragma unroll
    for (int t = 0; t < 4; t++) out[t] = (int)(u32)((((u64)V[t + 1] << 32) | V[t]) >> s);
}

// Q6_K: ql[128], qh[64], scales[16] (int8), d; 210 bytes. Slice sl (0..7): chunk k = sl/2,
// positions l in 16i..16i+16 (i = sl%2), of both halves n: low 4 bits from ql[64n + 32(k%2) + l]
// (nibble k/2), high 2 bits from qh[32n + l] >> 2k, value - 32, scale sc[8n + sl]. Its x bytes are
// 128n + 16 sl, so the 8 lanes of a block read x as whole 128-byte lines. Every piece sits at a
// multiple of 16 in the 2-aligned block, so one realignment (8-byte loads) serves all four; the
// windows end at byte 200 at most, inside the block.
template <> struct Mmvq<RF_Q6_K> {
    enum { SE = 32, SPB = 8 };
    template <int NB> static RF_DEVICE_SPEC void dot(const u8* b, int sl, const i8* xq,
                                                const float2* xds, u32 xs, u32 dss, int nb,
                                                float* acc) {
        const int k = sl >> 1, i = sl & 1;
        const u32 o = (u32)(u64)b & 7u;
        const u8* a = b - o;
        int l0[4], l1[4], h0[4], h1[4];
        rf_ld16_al8(a + 32 * (k & 1) + 16 * i, o, l0);
        rf_ld16_al8(a + 64 + 32 * (k & 1) + 16 * i, o, l1);
        rf_ld16_al8(a + 128 + 16 * i, o, h0);
        rf_ld16_al8(a + 160 + 16 * i, o, h1);
        const int sc0 = (int)(i8)b[192 + sl], sc1 = (int)(i8)b[200 + sl];
        const float d = rf_h2f(rf_ld_u16(b + 208));
        const int ns = 4 * (k >> 1), hs = 2 * k;
        int v0[4], v1[4];
#pragma unroll
        for (int m = 0; m < 4; m++) {
            v0[m] = ((l0[m] >> ns) & 0x0F0F0F0F) | (((h0[m] >> hs) & 0x03030303) << 4);
            v1[m] = ((l1[m] >> ns) & 0x0F0F0F0F) | (((h1[m] >> hs) & 0x03030303) << 4);
        }
        xq += 16 * sl;
        xds += k;
#pragma unroll
        for (int r = 0; r < NB; r++) {
            if (r < nb) {
                int x0[4], x1[4];
                rf_ld_x16(xq + r * xs, x0);
                rf_ld_x16(xq + r * xs + 128, x1);
                int s0 = 0, s1 = 0, t0 = 0, t1 = 0;
#pragma unroll
                for (int m = 0; m < 4; m++) {
                    s0 = rf_dp4a(v0[m], x0[m], s0);
                    t0 = rf_dp4a(RF_ONES, x0[m], t0);
                    s1 = rf_dp4a(v1[m], x1[m], s1);
                    t1 = rf_dp4a(RF_ONES, x1[m], t1);
                }
                const float a = xds[r * dss].x * (float)(sc0 * (s0 - 32 * t0)) +
                                xds[r * dss + 4].x * (float)(sc1 * (s1 - 32 * t1));
                acc[r] += d * a;
            }
        }
    }
};

struct MmvqParams {
    const u8* w;         // [rows] rows of row_bytes bytes
    const i8* xq;        // [n, cols] Q8_1 values (unfused)
    const float2* xds;   // [n, cols / 32] Q8_1 (d, d * sum q) (unfused)
    const float* x;      // [n, cols] f32 (fused: each block quantizes it into shared memory)
    const float* bias;   // [rows] or null
    float* y;            // [n, y_stride]
    u64 row_bytes;
    u32 rows;
    u32 cols;
    u32 n;               // vectors
    u32 y_stride;
    u32 warps_per_row;   // 1, 2 or 4; a block holds MMVQ_WARPS warps
    u32 groups;          // 0: blockIdx.x is the row block, blockIdx.y the vector group; else a
                         // 1-D grid of row blocks x `groups` vector groups, the group fastest (the
                         // groups of one row block run together and re-read its weights from L2)
    u32 tile_stride;     // mmvqp: row tiles between two tiles of one block (its blocks per group)
};

#define MMVQ_WARPS 4
#define MMVQ_UNROLL 2

// One row per warps_per_row warps; lanes take slices (lane, lane + 32 * warps_per_row, ...),
// U (MMVQ_UNROLL, or 4 for long rows in a small grid: the `x4` kernels) slices at a time with
// clamped indices so that their loads are all issued before use. U does not change the float
// operations: each lane still adds its slices' terms in slice order.
// Each vector group takes up to NB vectors: weights are loaded once for all of them.
// Batch invariance: the float operations giving y[b, row] are the same whatever NB, n, the group
// or the grid layout (each vector has its own accumulators, the lane <-> slice assignment depends
// only on the matrix shape), so a vector's result does not depend on what it is batched with.
// F (fused): the block first quantizes its vectors into shared memory (nb * cols * 1.25 bytes of
// dynamic shared memory), saving the separate quantize_q8_1 launch.
template <int T, int NB, bool F, int U = MMVQ_UNROLL> RF_DEVICE void mmvq(const MmvqParams& p) {
    RF_PDL_WAIT();
    __shared__ float part[MMVQ_WARPS][NB];
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const u32 wpr = p.warps_per_row;
    const u32 rblk = p.groups ? blockIdx.x / p.groups : blockIdx.x;
    const u32 grp = p.groups ? blockIdx.x % p.groups : blockIdx.y;
    const u32 row = rblk * (MMVQ_WARPS / wpr) + warp / wpr;
    const u32 sub = warp % wpr;
    const bool valid = row < p.rows;
    const u32 rr = valid ? row : p.rows - 1;
    const u32 b0 = grp * NB;
    const int nb = (int)min((u32)NB, p.n - b0);
    const u8* w = p.w + (u64)rr * p.row_bytes;
    const i8* xq;
    const float2* xds;
    const u32 nsl = p.cols / Mmvq<T>::SE;
    const u32 stride = WARP_SIZE * wpr;
    if (F) {
        // Start this lane's first weight lines towards L2 while x is quantized.
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u32 s = min(sub * WARP_SIZE + lane + u * stride, nsl - 1);
            rf_prefetch_l2(w + (u64)(s / Mmvq<T>::SPB) * QInfo<T>::BYTES +
                           (s % Mmvq<T>::SPB) * (QInfo<T>::BYTES / Mmvq<T>::SPB));
        }
        extern __shared__ int4 mmvq_smem[];
        i8* sq = (i8*)mmvq_smem;
        float2* sds = (float2*)(sq + (u64)nb * p.cols);
        const float4* x4 = (const float4*)(p.x + (u64)b0 * p.cols);
        const u32 total4 = (u32)nb * p.cols / 4;
        for (u32 base = 0; base < total4; base += blockDim.x) {  // uniform trip count
            const u32 i4 = base + threadIdx.x;
            const bool ok = i4 < total4;  // whole 8-thread groups share one fate
            float4 v;
            v.x = v.y = v.z = v.w = 0.0f;
            if (ok) v = x4[i4];
            float2 ds;
            const u32 q = rf_q8_1_x4(v, &ds);
            if (ok) {
                ((u32*)sq)[i4] = q;
                if (i4 % 8 == 0) sds[i4 / 8] = ds;
            }
        }
        __syncthreads();
        xq = sq;
        xds = sds;
    } else {
        xq = p.xq + (u64)b0 * p.cols;
        xds = p.xds + (u64)b0 * (p.cols / 32);
    }
    float acc[NB];
#pragma unroll
    for (int r = 0; r < NB; r++) acc[r] = 0.0f;
    for (u32 s0 = sub * WARP_SIZE + lane; s0 < nsl; s0 += U * stride) {
        float t[U][NB];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const u32 s = min(s0 + u * stride, nsl - 1);
            const u32 blk = s / Mmvq<T>::SPB, sl = s % Mmvq<T>::SPB;
            const u32 e = blk * QInfo<T>::BLOCK;
#pragma unroll
            for (int r = 0; r < NB; r++) t[u][r] = 0.0f;
            Mmvq<T>::template dot<NB>(w + (u64)blk * QInfo<T>::BYTES, (int)sl, xq + e, xds + e / 32,
                                      p.cols, p.cols / 32, nb, t[u]);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
            if (s0 + u * stride < nsl)
#pragma unroll
                for (int r = 0; r < NB; r++) acc[r] += t[u][r];
    }
#pragma unroll
    for (int r = 0; r < NB; r++) acc[r] = rf_warp_sum(acc[r]);
    if (wpr > 1) {
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < NB; r++) part[warp][r] = acc[r];
        __syncthreads();
        if (sub != 0) return;
#pragma unroll
        for (int r = 0; r < NB; r++) {
            float a = 0.0f;
            for (u32 k = 0; k < wpr; k++) a += part[warp + k][r];
            acc[r] = a;
        }
    }
    if (lane == 0 && valid) {
        const float bv = p.bias ? p.bias[row] : 0.0f;
#pragma unroll
        for (int r = 0; r < NB; r++)
            if (r < nb) p.y[(u64)(b0 + r) * p.y_stride + row] = acc[r] + bv;
    }
}

// Many vectors, batch-invariantly fast ("mmvqt"): every output gets exactly mmvq's float
// operations, regrouped so that a lane does more than one slice per output and the cross-lane
// reduction is short. In mmvq, lane l of sub-warp k owns "chain" c = k * WARP_SIZE + l, the
// sequential sum of the slices c, c + stride, ... (stride = WARP_SIZE * warps_per_row); the
// chains of a sub-warp are then summed by the xor butterfly of rf_warp_sum (distances
// WARP_SIZE / 2 down to 1), and the sub-warps' sums in order. Here 4 lanes (a quad) own one
// output row: quad lane i holds the chains i + 4 m (m < WARP_SIZE / 4), sums the butterfly's
// levels of distance >= 4 itself (for chain i + 4 m the partner at distance 4 d is m ^ d: chains
// are taken in bit-reversed m order and merged like a binary counter) and the last two levels
// with the same xor shuffles. Float addition is commutative, so each level's sums are the same
// numbers as mmvq's; x is pre-quantized (quantize_q8_1, the same rounding as the fused path).
// A block: (its warps) x WARP_SIZE / 4 rows, one group of NB vectors (1-D grid, groups of a row
// block side by side as in mmvq with `groups`).
#define MMVQT_QUAD 4
#define MMVQT_CPL (WARP_SIZE / MMVQT_QUAD)  // chains per lane per sub-warp: 8 or 16
#if WARP_SIZE == 64
#define MMVQT_LOG_CPL 4
#else
#define MMVQT_LOG_CPL 3
#endif
template <int T, int NB> RF_DEVICE void mmvqt(const MmvqParams& p) {
    RF_PDL_WAIT();
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int qi = lane % MMVQT_QUAD;
    const u32 rows_per_block = (blockDim.x / WARP_SIZE) * (WARP_SIZE / MMVQT_QUAD);
    const u32 groups = p.groups ? p.groups : 1;
    const u32 rblk = blockIdx.x / groups, grp = blockIdx.x % groups;
    const u32 row = rblk * rows_per_block + warp * (WARP_SIZE / MMVQT_QUAD) + lane / MMVQT_QUAD;
    const bool valid = row < p.rows;
    const u32 rr = valid ? row : p.rows - 1;
    const u32 b0 = grp * NB;
    const int nb = (int)min((u32)NB, p.n - b0);
    const u8* w = p.w + (u64)rr * p.row_bytes;
    const i8* xq = p.xq + (u64)b0 * p.cols;
    const float2* xds = p.xds + (u64)b0 * (p.cols / 32);
    const u32 nsl = p.cols / Mmvq<T>::SE;
    const u32 wpr = p.warps_per_row;
    const u32 stride = WARP_SIZE * wpr;
    float total[NB];
#pragma unroll
    for (int r = 0; r < NB; r++) total[r] = 0.0f;
    for (u32 sub = 0; sub < wpr; sub++) {
        float stk[MMVQT_LOG_CPL][NB];
        float cur[NB];
#pragma unroll
        for (int k = 0; k < MMVQT_CPL; k++) {
            int m = 0;  // k bit-reversed
#pragma unroll
            for (int b = 0; b < MMVQT_LOG_CPL; b++) m |= ((k >> b) & 1) << (MMVQT_LOG_CPL - 1 - b);
            const u32 c = sub * WARP_SIZE + qi + MMVQT_QUAD * m;
#pragma unroll
            for (int r = 0; r < NB; r++) cur[r] = 0.0f;
            for (u32 s = c; s < nsl; s += stride) {
                float t[NB];
#pragma unroll
                for (int r = 0; r < NB; r++) t[r] = 0.0f;
                const u32 blk = s / Mmvq<T>::SPB, sl = s % Mmvq<T>::SPB;
                const u32 e = blk * QInfo<T>::BLOCK;
                Mmvq<T>::template dot<NB>(w + (u64)blk * QInfo<T>::BYTES, (int)sl, xq + e,
                                          xds + e / 32, p.cols, p.cols / 32, nb, t);
#pragma unroll
                for (int r = 0; r < NB; r++) cur[r] += t[r];
            }
            // Binary counter: merge with the stacked sums while k's low bits are ones.
#pragma unroll
            for (int j = 0; j < MMVQT_LOG_CPL; j++) {
                if (((k >> j) & 1) == 0) {
#pragma unroll
                    for (int r = 0; r < NB; r++) stk[j][r] = cur[r];
                    break;
                }
#pragma unroll
                for (int r = 0; r < NB; r++) cur[r] = stk[j][r] + cur[r];
            }
        }
        // cur: this lane's sum of the levels of distance >= 4; the last two levels across the quad.
#pragma unroll
        for (int r = 0; r < NB; r++) {
            float v = cur[r];
            v += rf_shfl_xor(v, 2);
            v += rf_shfl_xor(v, 1);
            total[r] = wpr > 1 ? total[r] + v : v;
        }
    }
    if (qi == 0 && valid) {
        const float bv = p.bias ? p.bias[row] : 0.0f;
#pragma unroll
        for (int r = 0; r < NB; r++)
            if (r < nb) p.y[(u64)(b0 + r) * p.y_stride + row] = total[r] + bv;
    }
}

#define RF_MMVQ(T, s)                                                          \
    RF_KERNEL void mmvq1_##s(const MmvqParams p) { mmvq<T, 1, false>(p); }  \
    RF_KERNEL void mmvq4_##s(const MmvqParams p) { mmvq<T, 4, false>(p); }  \
    RF_KERNEL void mmvqf1_##s(const MmvqParams p) { mmvq<T, 1, true>(p); } \
    RF_KERNEL void mmvqf4_##s(const MmvqParams p) { mmvq<T, 4, true>(p); } \
    RF_KERNEL void mmvq8_##s(const MmvqParams p) { mmvq<T, 8, false>(p); } \
    RF_KERNEL void mmvqt4_##s(const MmvqParams p) { mmvqt<T, 4>(p); }     \
    RF_KERNEL void mmvq1x4_##s(const MmvqParams p) { mmvq<T, 1, false, 4>(p); } \
    RF_KERNEL void mmvqf1x4_##s(const MmvqParams p) { mmvq<T, 1, true, 4>(p); }
RF_MMVQ(RF_Q4_0, q4_0)
RF_MMVQ(RF_Q4_1, q4_1)
RF_MMVQ(RF_Q5_0, q5_0)
RF_MMVQ(RF_Q5_1, q5_1)
RF_MMVQ(RF_Q8_0, q8_0)
RF_MMVQ(RF_Q2_K, q2_k)
RF_MMVQ(RF_Q3_K, q3_k)
RF_MMVQ(RF_Q4_K, q4_k)
RF_MMVQ(RF_Q5_K, q5_k)
RF_MMVQ(RF_Q6_K, q6_k)

// ---------------------------------------------------------------------------------------------
// Many vectors, batch-invariantly fast on tensor cores ("mmvqm"): every output gets exactly
// mmvq's float operations (as mmvqt), but a slice's integer sums for 16 rows x 8 vectors come
// from one int8 MMA (mma.sync m16n8k32: one 32-wide slice = one Q8_1 block of x). Integer sums
// are exact, so how they are computed does not matter; the float order does and is mmvq's:
// term per slice = the type's dot expression, chain c = k * WARP_SIZE + l (sub-warp k, lane l)
// = sequential sum of the terms of slices c, c + stride, ..., the 32 chains of a sub-warp summed
// by the xor butterfly (distances 16 .. 1), the sub-warps' sums in order, then + bias.
// Layout: 4 warps compute 16 rows x 8 * NT vectors. Each thread holds the same 4 outputs of every
// 16 x 8 tile (MMA accumulator layout: rows g, g + 8, vectors 2t, 2t + 1; g = lane / 4,
// t = lane % 4). Warp w takes the chains c = 4 m + w of a sub-warp, in bit-reversed m order
// merged like a binary counter (the butterfly levels of distance 16, 8, 4 in-thread, as in
// mmvqt); the 4 warps' sums meet in shared memory for the levels of distance 2 and 1:
// (P0 + P2) + (P1 + P3). The MMA's k order is free (the sum is exact): thread t feeds the
// weights and x of k in [8t, 8t + 8), so x is one aligned 8-byte load per vector. The MMA starts
// from the bit pattern of 1.5 * 2^23, so its int32 result read as a float is 1.5 * 2^23 + isum
// exactly (|isum| <= 32 * 127 * 128 < 2^22) and one subtraction gives (float)isum.
// SUBW (1 or 4): that many groups of 4 warps take sub-warps side by side (blocks of 4 SUBW
// warps; for long rows with 4 sub-warps, which 4 warps would run one after the other), their
// sums added in sub-warp order. Each block first asks L2 for its whole 16-row weight tile.
// Without MMA (HIP, before sm_80; the `mmvqd4` check everywhere) the same isums come from dp4a.
// x pre-quantized (quantize_q8_1). 1-D grid: row blocks x `groups` vector groups, group fastest.
// Measured on the H100 and dropped (docs/PERFORMANCE.md): operands loaded a slice ahead, and
// weight tile + x staged in shared memory first (both slower).
#define MMVQM_WARPS 4
#define MMVQM_LOG 3  // log2 of the chains per warp and sub-warp (WARP_SIZE / MMVQM_WARPS = 8)
#define MMVQM_BIAS 0x4B400000
#define MMVQM_BIASF 12582912.0f

template <int T> struct Mmvqm;
template <> struct Mmvqm<RF_Q8_0> {
    // Row block b: its scale and the weights of k in [8t, 8t + 8) as two words of int8.
    static RF_DEVICE_SPEC float load(const u8* b, int t, int* q) {
        rf_ld_run<2>(b + 2 + 8 * t, q);
        return rf_h2f(rf_ld_u16(b));
    }
    // All 32 weights (the dp4a path).
    static RF_DEVICE_SPEC float load_all(const u8* b, int* q) {
        rf_ld_run<8>(b + 2, q);
        return rf_h2f(rf_ld_u16(b));
    }
    // One slice's term, as Mmvq<RF_Q8_0>::dot writes it into a zeroed accumulator.
    static RF_DEVICE_SPEC float term(float d, float xd, float s) {
        float t = 0.0f;
        t += d * xd * s;
        return t;
    }
};

template <int T, int NT, int SUBW, bool MMA> RF_DEVICE void mmvqm(const MmvqParams& p) {
    RF_PDL_WAIT();
#if WARP_SIZE == 32
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
    constexpr bool use_mma = MMA;
#else
    constexpr bool use_mma = false;
#endif
    __shared__ float part[SUBW][MMVQM_WARPS][NT * 4][WARP_SIZE];
    __shared__ float rsum[SUBW > 1 ? SUBW : 1][NT * 4][WARP_SIZE];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = (threadIdx.x / WARP_SIZE) % MMVQM_WARPS, sg = threadIdx.x / (WARP_SIZE * MMVQM_WARPS);
    const int g = lane >> 2, t = lane & 3;
    const u32 groups = p.groups ? p.groups : 1;
    const u32 rblk = blockIdx.x / groups, grp = blockIdx.x % groups;
    const u32 row0 = rblk * 16;
    {
        const u8* base = p.w + (u64)row0 * p.row_bytes;
        const u32 bytes = (min(row0 + 16, p.rows) - row0) * (u32)p.row_bytes;
        for (u32 o = threadIdx.x * 128; o < bytes; o += blockDim.x * 128) rf_prefetch_l2(base + o);
    }
    const u8* wa = p.w + (u64)min(row0 + g, p.rows - 1) * p.row_bytes;
    const u8* wb = p.w + (u64)min(row0 + g + 8, p.rows - 1) * p.row_bytes;
    const u32 v0 = grp * (8 * NT);
    const u32 nsl = p.cols / 32;
    const u32 wpr = p.warps_per_row;
    const u32 stride = WARP_SIZE * wpr;
    // x of this thread's B-fragment vectors (v0 + 8 j + g) and its outputs' vectors
    // (v0 + 8 j + 2 t + e), clamped to the last vector (their results are not stored), as 32-bit
    // element offsets from p.xq / p.xds (fewer registers than pointers).
    u32 xb[NT], xd[NT][2];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        xb[j] = min(v0 + 8 * j + g, p.n - 1) * p.cols + 8 * t;
#pragma unroll
        for (int e = 0; e < 2; e++) xd[j][e] = min(v0 + 8 * j + 2 * t + e, p.n - 1) * nsl;
    }
    float total[4];
#pragma unroll
    for (int i = 0; i < 4; i++) total[i] = 0.0f;
    for (u32 sub0 = 0; sub0 < wpr; sub0 += SUBW) {
        const u32 sub = sub0 + sg;  // >= wpr: this group idles (uniform per warp)
        float stk[MMVQM_LOG][NT][4];
        float cur[NT][4];
#pragma unroll
        for (int k = 0; k < (1 << MMVQM_LOG); k++) {
            int m = 0;  // k bit-reversed
#pragma unroll
            for (int b = 0; b < MMVQM_LOG; b++) m |= ((k >> b) & 1) << (MMVQM_LOG - 1 - b);
            const u32 c = sub * WARP_SIZE + MMVQM_WARPS * m + warp;
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) cur[j][i] = 0.0f;
            for (u32 s = c; sub < wpr && s < nsl; s += stride) {
                const u64 off = (u64)s * QInfo<T>::BYTES;
                int acc[NT][4];
                float da, db;
                if (use_mma) {
                    int qa[2], qb[2];
                    da = Mmvqm<T>::load(wa + off, t, qa);
                    db = Mmvqm<T>::load(wb + off, t, qb);
#pragma unroll
                    for (int j = 0; j < NT; j++) {
                        const int2 xv = *(const int2*)(p.xq + xb[j] + 32 * s);
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
                        asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                            "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
                            : "=r"(acc[j][0]), "=r"(acc[j][1]), "=r"(acc[j][2]), "=r"(acc[j][3])
                            : "r"(qa[0]), "r"(qb[0]), "r"(qa[1]), "r"(qb[1]), "r"(xv.x), "r"(xv.y),
                              "r"(MMVQM_BIAS));
#else
                        (void)xv;
#endif
                    }
                } else {
                    int qa[8], qb[8];
                    da = Mmvqm<T>::load_all(wa + off, qa);
                    db = Mmvqm<T>::load_all(wb + off, qb);
#pragma unroll
                    for (int j = 0; j < NT; j++) {
#pragma unroll
                        for (int e = 0; e < 2; e++) {
                            const u32 v = min(v0 + 8 * j + 2 * t + e, p.n - 1);
                            const i8* xp = p.xq + (u64)v * p.cols + 32 * s;
                            int x[8];
                            rf_ld_x16(xp, x);
                            rf_ld_x16(xp + 16, x + 4);
                            int sa = 0, sb = 0;
#pragma unroll
                            for (int i = 0; i < 8; i++) {
                                sa = rf_dp4a(qa[i], x[i], sa);
                                sb = rf_dp4a(qb[i], x[i], sb);
                            }
                            acc[j][e] = sa + MMVQM_BIAS;
                            acc[j][2 + e] = sb + MMVQM_BIAS;
                        }
                    }
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const float x0 = p.xds[xd[j][0] + s].x, x1 = p.xds[xd[j][1] + s].x;
                    cur[j][0] += Mmvqm<T>::term(da, x0, __int_as_float(acc[j][0]) - MMVQM_BIASF);
                    cur[j][1] += Mmvqm<T>::term(da, x1, __int_as_float(acc[j][1]) - MMVQM_BIASF);
                    cur[j][2] += Mmvqm<T>::term(db, x0, __int_as_float(acc[j][2]) - MMVQM_BIASF);
                    cur[j][3] += Mmvqm<T>::term(db, x1, __int_as_float(acc[j][3]) - MMVQM_BIASF);
                }
            }
            // Binary counter: merge with the stacked sums while k's low bits are ones.
#pragma unroll
            for (int l = 0; l < MMVQM_LOG; l++) {
                if (((k >> l) & 1) == 0) {
#pragma unroll
                    for (int j = 0; j < NT; j++)
#pragma unroll
                        for (int i = 0; i < 4; i++) stk[l][j][i] = cur[j][i];
                    break;
                }
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int i = 0; i < 4; i++) cur[j][i] = stk[l][j][i] + cur[j][i];
            }
        }
        // cur: this warp's chains' sum (levels 16, 8, 4); levels 2 and 1 across the warps.
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) part[sg][warp][4 * j + i][lane] = cur[j][i];
        __syncthreads();
        // Warp `warp` < NT of each group finishes tile `warp` (outputs 4 warp .. 4 warp + 3 of
        // `lane`); with NT == 2, warps 2 and 3 idle here.
        if (warp < NT) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int o = 4 * warp + i;
                const float r = (part[sg][0][o][lane] + part[sg][2][o][lane]) +
                                (part[sg][1][o][lane] + part[sg][3][o][lane]);
                if (SUBW == 1)
                    total[i] = wpr > 1 ? total[i] + r : r;
                else
                    rsum[sg][o][lane] = r;
            }
        }
        __syncthreads();
        if (SUBW > 1 && sg == 0 && warp < NT) {
            // the sub-warps' sums in order (the next write of rsum is behind the next barrier)
#pragma unroll
            for (int q = 0; q < SUBW; q++)
                if (sub0 + q < wpr)
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float r = rsum[q][4 * warp + i][lane];
                        total[i] = wpr > 1 ? total[i] + r : r;
                    }
        }
    }
    if (sg == 0 && warp < NT) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const u32 row = row0 + g + 8 * (i >> 1);
            const u32 v = v0 + 8 * warp + 2 * t + (i & 1);
            if (row < p.rows && v < p.n)
                p.y[(u64)v * p.y_stride + row] = total[i] + (p.bias ? p.bias[row] : 0.0f);
        }
    }
#endif
}

// mmvqm4: 32 vectors per block, mmvqm2: 16; mmvqs4: mmvqm4 with the 4 sub-warps of long rows
// side by side (16 warps per block); mmvqd4: mmvqm4 with dp4a instead of MMA (checks).
#define RF_MMVQM(T, s)                                                                              \
    RF_KERNEL void __launch_bounds__(128, 4) mmvqm4_##s(const MmvqParams p) { mmvqm<T, 4, 1, true>(p); } \
    RF_KERNEL void mmvqm2_##s(const MmvqParams p) { mmvqm<T, 2, 1, true>(p); }                      \
    RF_KERNEL void __launch_bounds__(512) mmvqs4_##s(const MmvqParams p) { mmvqm<T, 4, 4, true>(p); }    \
    RF_KERNEL void mmvqd4_##s(const MmvqParams p) { mmvqm<T, 4, 1, false>(p); }
RF_MMVQM(RF_Q8_0, q8_0)

// ---------------------------------------------------------------------------------------------
// Persistent, x-stationary tensor-core kernel ("mmvqp"; Q8_0, CUDA sm_80+): mmvqm's float
// operations for rows of one sub-warp (warps_per_row 1) of at most 32 slices (896-column qwen
// products: every chain has at most one slice), with the operands read from shared memory.
// mmvqm reads them from global memory in loads that each touch 8 rows or 8 vectors, which made it
// bound by L1 wavefronts (ncu: 74-84% of the LSU data pipe), and re-reads x (2.3 bytes per
// weight byte at 32 vectors) from L2 for every 16 rows. Here a block of 4 VG RG warps holds 32 VG
// vectors: it copies their Q8_1 values (rows padded so that the 8-byte B-fragment reads are
// conflict-free) and scales (transposed, [slice][vector]) into dynamic shared memory once, then
// walks the row tiles tile0, tile0 + tile_stride, ..., each tile of 16 RG rows (contiguous bytes)
// copied with 16-byte cp.async one tile ahead (double buffered). Each group of 4 warps (vector
// subgroup vg, rows 16 rg ..) computes chains 4 m + w of 16 rows x 32 vectors exactly as mmvqm
// does (bit-reversed m merged like a binary counter, levels 2 and 1 across its 4 warps in shared
// memory), then + bias. 1-D grid: tile_stride x `groups` blocks, the group fastest (the groups
// of one tile run together and share its weights in L2). Dynamic shared memory: mmvqp_smem in
// ops/matvec.rs (the same layout).
RF_DEVICE u32 mmvqp_xpitch(u32 cols) { return ((cols + 127) & ~127u) + 32; }  // 8 mod 32 words
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
RF_DEVICE u32 rf_smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
RF_DEVICE void rf_cp16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(rf_smem_addr(dst)), "l"(src) : "memory");
}
RF_DEVICE void rf_cp4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(rf_smem_addr(dst)), "l"(src) : "memory");
}
RF_DEVICE void rf_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> RF_DEVICE void rf_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
#endif

// A Q8_0 block in shared memory b: its scale at byte offset `so`, and this thread's weights k in
// [8 t, 8 t + 8) as two words from the 3 aligned words at byte offset `qw` (a multiple of 4),
// realigned by `sh` bits (0 or 16; the third word only when it is needed: unshifted, it would
// lie past the block, for the last row of a tile in the next buffer, which cp.async may be
// writing). The caller hoists qw and sh: 4 consecutive slices of a row are 136 bytes apart, so
// both are the same for every chain of a warp.
RF_DEVICE float mmvqp_load_q8_0(const u8* b, u32 qw, u32 sh, u32 so, int* q) {
    const u32* w = (const u32*)(b + qw);
    const u32 w0 = w[0], w1 = w[1], w2 = sh ? w[2] : 0u;
    q[0] = (int)(u32)((((u64)w1 << 32) | w0) >> sh);
    q[1] = (int)(u32)((((u64)w2 << 32) | w1) >> sh);
    return rf_h2f(*(const u16*)(b + so));
}

template <int T, int VG, int RG> RF_DEVICE void mmvqp(const MmvqParams& p) {
    RF_PDL_WAIT();
#if WARP_SIZE == 32 && defined(RF_CUDA) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 800)
    constexpr int NT = 4, VB = 32 * VG, TR = 16 * RG;  // vectors and rows per block
    extern __shared__ int4 mmvqp_dyn[];
    const u32 nsl = p.cols / 32;
    const u32 xp = mmvqp_xpitch(p.cols);
    const u32 rb = (u32)p.row_bytes;
    const u32 tb = TR * rb;  // a multiple of 32 (rb is even)
    i8* sx = (i8*)mmvqp_dyn;                              // [VB][xp]
    float* sd = (float*)(sx + VB * xp);                   // [nsl][VB]
    u8* sw = (u8*)(sd + nsl * VB);                        // [2][tb]
    float* part = (float*)(sw + 2 * tb);                  // [VG RG][4][16][32]
    const int lane = threadIdx.x % WARP_SIZE, wid = threadIdx.x / WARP_SIZE;
    const int warp = wid % MMVQM_WARPS, sub = wid / MMVQM_WARPS;
    const int vg = sub % VG, rg = sub / VG;  // this warp's vectors 32 vg.., rows 16 rg.. of the tile
    const int g = lane >> 2, t = lane & 3;
    const u32 groups = p.groups ? p.groups : 1;
    const u32 grp = blockIdx.x % groups;
    const u32 tiles = (p.rows + TR - 1) / TR;
    const u32 v0 = grp * VB;
    {
        const u32 c16 = p.cols / 16;
        for (u32 i = threadIdx.x; i < VB * c16; i += blockDim.x) {
            const u32 v = i / c16, c = i - v * c16;
            rf_cp16(sx + v * xp + 16 * c, p.xq + (u64)min(v0 + v, p.n - 1) * p.cols + 16 * c);
        }
        for (u32 i = threadIdx.x; i < VB * nsl; i += blockDim.x) {
            const u32 s = i / VB, v = i - s * VB;
            rf_cp4(sd + i, &p.xds[(u64)min(v0 + v, p.n - 1) * nsl + s].x);
        }
    }
    // Row tile `tl` into buffer `buf`: 16-byte copies, the 2-byte tail of a ragged last tile
    // with plain loads (visible after the barrier that precedes its use).
    auto load_tile = [&](u32 tl, u32 buf) {
        const u32 r0 = tl * TR;
        const u32 bytes = min((u32)TR, p.rows - r0) * rb;
        const u8* src = p.w + (u64)r0 * rb;
        u8* dst = sw + buf * tb;
        const u32 n16 = bytes / 16;
        for (u32 o = threadIdx.x; o < n16; o += blockDim.x) rf_cp16(dst + 16 * o, src + 16 * o);
        for (u32 o = 16 * n16 + 2 * threadIdx.x; o < bytes; o += 2 * blockDim.x)
            *(u16*)(dst + o) = *(const u16*)(src + o);
    };
    u32 tile = blockIdx.x / groups, buf = 0;
    if (tile < tiles) load_tile(tile, 0);
    rf_cp_commit();  // x, scales and the first tile
    const i8* xrow[NT];
    const float* drow[NT];
#pragma unroll
    for (int j = 0; j < NT; j++) {
        xrow[j] = sx + (vg * 32 + 8 * j + g) * xp + 8 * t;
        drow[j] = sd + vg * 32 + 8 * j + 2 * t;
    }
    float* mypart = part + sub * (MMVQM_WARPS * 16 * WARP_SIZE);
    for (; tile < tiles; tile += p.tile_stride, buf ^= 1) {
        if (tile + p.tile_stride < tiles) load_tile(tile + p.tile_stride, buf ^ 1);
        rf_cp_commit();
        rf_cp_wait<1>();  // everything but the tile just requested
        __syncthreads();
        const u32 row0 = tile * TR + 16 * rg;      // this warp's first row (may be past the end)
        const u32 nr = min((u32)TR, p.rows - tile * TR);  // rows in the tile
        const u32 rl = 16 * rg;                    // its first row within the tile
        const u8* sb = (const u8*)mmvqp_dyn;
        const u32 wbase = (u32)(sw - (u8*)mmvqp_dyn) + buf * tb;
        // rows g and g + 8 (clamped): block `warp` (the chains' slices are warp + 4 m), its
        // weights' aligned start and shift
        const u32 sa = wbase + min(rl + g, nr - 1) * rb + QInfo<T>::BYTES * warp;
        const u32 sbb = wbase + min(rl + g + 8, nr - 1) * rb + QInfo<T>::BYTES * warp;
        const u32 qwa = (sa + 2 + 8 * t) & ~3u, sha = ((sa + 2 + 8 * t) & 3u) * 8u;
        const u32 qwb = (sbb + 2 + 8 * t) & ~3u, shb = ((sbb + 2 + 8 * t) & 3u) * 8u;
        float stk[MMVQM_LOG][NT][4];
        float cur[NT][4];
#pragma unroll
        for (int k = 0; k < (1 << MMVQM_LOG); k++) {
            int m = 0;  // k bit-reversed
#pragma unroll
            for (int b = 0; b < MMVQM_LOG; b++) m |= ((k >> b) & 1) << (MMVQM_LOG - 1 - b);
            const u32 s = MMVQM_WARPS * m + warp;  // chain = its only slice
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) cur[j][i] = 0.0f;
            if (s < nsl) {
                const u32 off = MMVQM_WARPS * QInfo<T>::BYTES * m;  // a multiple of 4 (136 m)
                int qa[2], qb[2], acc[NT][4];
                const float da = mmvqp_load_q8_0(sb, qwa + off, sha, sa + off, qa);
                const float db = mmvqp_load_q8_0(sb, qwb + off, shb, sbb + off, qb);
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const int2 xv = *(const int2*)(xrow[j] + 32 * s);
                    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
                        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};"
                        : "=r"(acc[j][0]), "=r"(acc[j][1]), "=r"(acc[j][2]), "=r"(acc[j][3])
                        : "r"(qa[0]), "r"(qb[0]), "r"(qa[1]), "r"(qb[1]), "r"(xv.x), "r"(xv.y),
                          "r"(MMVQM_BIAS));
                }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    const float2 xd = *(const float2*)(drow[j] + s * VB);
                    cur[j][0] += Mmvqm<T>::term(da, xd.x, __int_as_float(acc[j][0]) - MMVQM_BIASF);
                    cur[j][1] += Mmvqm<T>::term(da, xd.y, __int_as_float(acc[j][1]) - MMVQM_BIASF);
                    cur[j][2] += Mmvqm<T>::term(db, xd.x, __int_as_float(acc[j][2]) - MMVQM_BIASF);
                    cur[j][3] += Mmvqm<T>::term(db, xd.y, __int_as_float(acc[j][3]) - MMVQM_BIASF);
                }
            }
#pragma unroll
            for (int l = 0; l < MMVQM_LOG; l++) {
                if (((k >> l) & 1) == 0) {
#pragma unroll
                    for (int j = 0; j < NT; j++)
#pragma unroll
                        for (int i = 0; i < 4; i++) stk[l][j][i] = cur[j][i];
                    break;
                }
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int i = 0; i < 4; i++) cur[j][i] = stk[l][j][i] + cur[j][i];
            }
        }
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) mypart[(warp * 16 + 4 * j + i) * WARP_SIZE + lane] = cur[j][i];
        __syncthreads();  // (also: every thread is done with this weight buffer)
        // warp w finishes tile column w: outputs 4 w .. 4 w + 3 of `lane`
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int o = 4 * warp + i;
            const float r = (mypart[(0 * 16 + o) * WARP_SIZE + lane] + mypart[(2 * 16 + o) * WARP_SIZE + lane]) +
                            (mypart[(1 * 16 + o) * WARP_SIZE + lane] + mypart[(3 * 16 + o) * WARP_SIZE + lane]);
            const u32 row = row0 + g + 8 * (i >> 1);
            const u32 v = v0 + vg * 32 + 8 * warp + 2 * t + (i & 1);
            if (row < p.rows && v < p.n) p.y[(u64)v * p.y_stride + row] = r + (p.bias ? p.bias[row] : 0.0f);
        }
    }
    rf_cp_wait<0>();
#endif
}

// mmvqp8: 8 warps, 64 vectors x 16 rows per block; mmvqp4: 4 warps, 32 x 16; mmvqr8: 8 warps,
// 32 vectors x 32 rows (two 16-row halves, one per group of 4 warps, sharing x).
#define RF_MMVQP(T, s)                                                                              \
    RF_KERNEL void __launch_bounds__(256, 2) mmvqp8_##s(const MmvqParams p) { mmvqp<T, 2, 1>(p); } \
    RF_KERNEL void __launch_bounds__(128, 3) mmvqp4_##s(const MmvqParams p) { mmvqp<T, 1, 1>(p); } \
    RF_KERNEL void __launch_bounds__(256, 2) mmvqr8_##s(const MmvqParams p) { mmvqp<T, 1, 2>(p); }
RF_MMVQP(RF_Q8_0, q8_0)
