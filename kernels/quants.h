// quants.h: ggml block formats, dequantized 32 values at a time ("chunks"): the one primitive the
// matrix-vector, matrix-matrix and embedding kernels share. Layouts are GGUF's, byte for byte;
// blocks are read with byte/halfword loads because most block sizes are not 4-byte multiples.
#pragma once
#include "compat.h"

// Type ids are ggml's.
#define RF_F32 0
#define RF_F16 1
#define RF_Q4_0 2
#define RF_Q4_1 3
#define RF_Q5_0 6
#define RF_Q5_1 7
#define RF_Q8_0 8
#define RF_Q2_K 10
#define RF_Q3_K 11
#define RF_Q4_K 12
#define RF_Q5_K 13
#define RF_Q6_K 14
#define RF_BF16 30

template <int T> struct QInfo;
// BLOCK: elements per block, BYTES: bytes per block, CHUNKS: 32-element chunks per block.
template <> struct QInfo<RF_F32> { enum { BLOCK = 32, BYTES = 128, CHUNKS = 1 }; };
template <> struct QInfo<RF_F16> { enum { BLOCK = 32, BYTES = 64, CHUNKS = 1 }; };
template <> struct QInfo<RF_BF16> { enum { BLOCK = 32, BYTES = 64, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q4_0> { enum { BLOCK = 32, BYTES = 18, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q4_1> { enum { BLOCK = 32, BYTES = 20, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q5_0> { enum { BLOCK = 32, BYTES = 22, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q5_1> { enum { BLOCK = 32, BYTES = 24, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q8_0> { enum { BLOCK = 32, BYTES = 34, CHUNKS = 1 }; };
template <> struct QInfo<RF_Q2_K> { enum { BLOCK = 256, BYTES = 84, CHUNKS = 8 }; };
template <> struct QInfo<RF_Q3_K> { enum { BLOCK = 256, BYTES = 110, CHUNKS = 8 }; };
template <> struct QInfo<RF_Q4_K> { enum { BLOCK = 256, BYTES = 144, CHUNKS = 8 }; };
template <> struct QInfo<RF_Q5_K> { enum { BLOCK = 256, BYTES = 176, CHUNKS = 8 }; };
template <> struct QInfo<RF_Q6_K> { enum { BLOCK = 256, BYTES = 210, CHUNKS = 8 }; };

RF_DEVICE float rf_ld_h(const u8* p) { return rf_h2f((u16)p[0] | ((u16)p[1] << 8)); }
RF_DEVICE u32 rf_ld_u32(const u8* p) {  // unaligned little-endian
    return (u32)p[0] | ((u32)p[1] << 8) | ((u32)p[2] << 16) | ((u32)p[3] << 24);
}

// The 6-bit scale and min `j` (0..7) of a Q4_K/Q5_K block (ggml's get_scale_min_k4).
RF_DEVICE void rf_scale_min_k4(int j, const u8* q, float* sc, float* m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

// Dequantizes chunk c (elements 32c .. 32c+31) of the block at `b` into v.
template <int T> RF_DEVICE void rf_deq_chunk(const u8* b, int c, float* v);

template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_F32>(const u8* b, int, float* v) {
    const float4* p = (const float4*)b;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float4 f = p[i];
        v[4 * i] = f.x; v[4 * i + 1] = f.y; v[4 * i + 2] = f.z; v[4 * i + 3] = f.w;
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_F16>(const u8* b, int, float* v) {
    const uint4* p = (const uint4*)b;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint4 w = p[i];
        u32 a[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[8 * i + 2 * k] = rf_h2f((u16)(a[k] & 0xFFFF));
            v[8 * i + 2 * k + 1] = rf_h2f((u16)(a[k] >> 16));
        }
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_BF16>(const u8* b, int, float* v) {
    const uint4* p = (const uint4*)b;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint4 w = p[i];
        u32 a[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            v[8 * i + 2 * k] = __uint_as_float(a[k] << 16);
            v[8 * i + 2 * k + 1] = __uint_as_float(a[k] & 0xFFFF0000u);
        }
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q4_0>(const u8* b, int, float* v) {
    const float d = rf_ld_h(b);
    const u8* qs = b + 2;
#pragma unroll
    for (int l = 0; l < 16; l++) {
        const u8 q = qs[l];
        v[l] = ((int)(q & 0xF) - 8) * d;
        v[l + 16] = ((int)(q >> 4) - 8) * d;
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q4_1>(const u8* b, int, float* v) {
    const float d = rf_ld_h(b), m = rf_ld_h(b + 2);
    const u8* qs = b + 4;
#pragma unroll
    for (int l = 0; l < 16; l++) {
        const u8 q = qs[l];
        v[l] = (q & 0xF) * d + m;
        v[l + 16] = (q >> 4) * d + m;
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q5_0>(const u8* b, int, float* v) {
    const float d = rf_ld_h(b);
    const u32 qh = rf_ld_u32(b + 2);
    const u8* qs = b + 6;
#pragma unroll
    for (int l = 0; l < 16; l++) {
        const u8 q = qs[l];
        v[l] = ((int)((q & 0xF) | (((qh >> l) & 1) << 4)) - 16) * d;
        v[l + 16] = ((int)((q >> 4) | (((qh >> (l + 16)) & 1) << 4)) - 16) * d;
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q5_1>(const u8* b, int, float* v) {
    const float d = rf_ld_h(b), m = rf_ld_h(b + 2);
    const u32 qh = rf_ld_u32(b + 4);
    const u8* qs = b + 8;
#pragma unroll
    for (int l = 0; l < 16; l++) {
        const u8 q = qs[l];
        v[l] = ((q & 0xF) | (((qh >> l) & 1) << 4)) * d + m;
        v[l + 16] = ((q >> 4) | (((qh >> (l + 16)) & 1) << 4)) * d + m;
    }
}
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q8_0>(const u8* b, int, float* v) {
    const float d = rf_ld_h(b);
    const u16* qs = (const u16*)(b + 2);  // blocks are 34 bytes: halfword aligned
#pragma unroll
    for (int l = 0; l < 16; l++) {
        const u16 w = qs[l];
        v[2 * l] = (float)(i8)(w & 0xFF) * d;
        v[2 * l + 1] = (float)(i8)(w >> 8) * d;
    }
}
// Q2_K: scales[16], qs[64], d, dmin.
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q2_K>(const u8* b, int c, float* v) {
    const u8* sc = b;
    const u8* q = b + 16 + 32 * (c / 4);
    const float d = rf_ld_h(b + 80), dmin = rf_ld_h(b + 82);
    const int shift = 2 * (c % 4);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const u8 s = sc[2 * c + h];
        const float dl = d * (s & 0xF), ml = dmin * (s >> 4);
#pragma unroll
        for (int l = 0; l < 16; l++) v[16 * h + l] = dl * ((q[16 * h + l] >> shift) & 3) - ml;
    }
}
// Q3_K: hmask[32], qs[64], scales[12], d.
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q3_K>(const u8* b, int c, float* v) {
    const u8* hm = b;
    const u8* q = b + 32 + 32 * (c / 4);
    const u8* sc = b + 96;
    const float d = rf_ld_h(b + 108);
    const int shift = 2 * (c % 4);
    const u8 m = (u8)(1u << c);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int s = 2 * c + h;
        const int lo = s < 8 ? (sc[s] & 0xF) : (sc[s - 8] >> 4);
        const int hi = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        const float dl = d * (float)((lo | (hi << 4)) - 32);
#pragma unroll
        for (int l = 0; l < 16; l++) {
            const int k = 16 * h + l;
            v[k] = dl * (float)(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
        }
    }
}
// Q4_K: d, dmin, scales[12], qs[128].
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q4_K>(const u8* b, int c, float* v) {
    const float d = rf_ld_h(b), dmin = rf_ld_h(b + 2);
    float sc, m;
    rf_scale_min_k4(c, b + 4, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    const uint4* q4 = (const uint4*)(b + 16 + 32 * (c / 2));
    const int shift = 4 * (c % 2);
#pragma unroll
    for (int i = 0; i < 2; i++) {
        uint4 w = q4[i];
        u32 a[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int k = 0; k < 4; k++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                v[16 * i + 4 * k + j] = d1 * (float)((a[k] >> (8 * j + shift)) & 0xF) - m1;
    }
}
// Q5_K: d, dmin, scales[12], qh[32], qs[128].
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q5_K>(const u8* b, int c, float* v) {
    const float d = rf_ld_h(b), dmin = rf_ld_h(b + 2);
    float sc, m;
    rf_scale_min_k4(c, b + 4, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    const u8* qh = b + 16;
    const u8* ql = b + 48 + 32 * (c / 2);
    const int shift = 4 * (c % 2);
#pragma unroll
    for (int l = 0; l < 32; l++)
        v[l] = d1 * (float)(((ql[l] >> shift) & 0xF) + (((qh[l] >> c) & 1) << 4)) - m1;
}
// Q6_K: ql[128], qh[64], scales[16] (int8), d.
template <> RF_DEVICE_SPEC void rf_deq_chunk<RF_Q6_K>(const u8* b, int c, float* v) {
    const int n = c / 4, k = c % 4;
    const u8* ql = b + 64 * n + 32 * (k % 2);
    const u8* qh = b + 128 + 32 * n;
    const i8* sc = (const i8*)(b + 192) + 8 * n;
    const float d = rf_ld_h(b + 208);
    const int lshift = 4 * (k / 2), hshift = 2 * k;
#pragma unroll
    for (int l = 0; l < 32; l++) {
        const int q = (int)(((ql[l] >> lshift) & 0xF) | (((qh[l] >> hshift) & 3) << 4)) - 32;
        v[l] = d * (float)sc[l / 16 + 2 * k] * (float)q;
    }
}

// Dequantizes chunk `chunk` (32 elements from 32*chunk) of a row of quantized blocks.
template <int T> RF_DEVICE void rf_deq_row_chunk(const u8* row, int chunk, float* v) {
    const int blk = chunk / QInfo<T>::CHUNKS, c = chunk % QInfo<T>::CHUNKS;
    rf_deq_chunk<T>(row + (u64)blk * QInfo<T>::BYTES, c, v);
}

// Instantiates MACRO(T, suffix) for every type.
#define RF_FOR_EACH_TYPE(MACRO)                                                              \
    MACRO(RF_F32, f32) MACRO(RF_F16, f16) MACRO(RF_BF16, bf16) MACRO(RF_Q4_0, q4_0)            \
    MACRO(RF_Q4_1, q4_1) MACRO(RF_Q5_0, q5_0) MACRO(RF_Q5_1, q5_1) MACRO(RF_Q8_0, q8_0)        \
    MACRO(RF_Q2_K, q2_k) MACRO(RF_Q3_K, q3_k) MACRO(RF_Q4_K, q4_k) MACRO(RF_Q5_K, q5_k)        \
    MACRO(RF_Q6_K, q6_k)
