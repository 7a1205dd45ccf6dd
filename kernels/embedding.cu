// Embedding lookup from a (quantized) table: out[t, :] = dequant(table[ids[t], :]).
// One block per token; threads take 32-element chunks (or single elements for float tables whose
// rows are not a multiple of 32).
#include "quants.h"

struct EmbeddingParams {
    const u8* table;  // [vocab] rows of row_bytes bytes
    const u32* ids;   // [tokens]
    float* out;       // [tokens, cols]
    u64 row_bytes;
    u32 vocab;
    u32 cols;
    float scale;      // multiplies every value (Gemma scales by sqrt(hidden))
};

template <int T> RF_DEVICE void embedding(const EmbeddingParams& p) {
    RF_PDL_WAIT();
    const u32 id = p.ids[blockIdx.x];
    float* out = p.out + (u64)blockIdx.x * p.cols;
    if (id >= p.vocab) {  // the Rust entry checks ids; an out-of-range id yields NaN, not a fault
        for (u32 k = threadIdx.x; k < p.cols; k += blockDim.x) out[k] = __int_as_float(0x7fc00000);
        return;
    }
    const u8* row = p.table + (u64)id * p.row_bytes;
    for (u32 ch = threadIdx.x; ch < p.cols / 32; ch += blockDim.x) {
        float v[32];
        rf_deq_row_chunk<T>(row, ch, v);
#pragma unroll
        for (int i = 0; i < 32; i++) out[32 * ch + i] = v[i] * p.scale;
    }
}

#define RF_EMBEDDING(T, s) \
    RF_KERNEL void embedding_##s(const EmbeddingParams p) { embedding<T>(p); }
RF_FOR_EACH_TYPE(RF_EMBEDDING)

RF_KERNEL void embedding_scalar_f32(const EmbeddingParams p) {
    RF_PDL_WAIT();
    const u32 id = p.ids[blockIdx.x];
    float* out = p.out + (u64)blockIdx.x * p.cols;
    const float* row = (const float*)(p.table + (u64)(id < p.vocab ? id : 0) * p.row_bytes);
    for (u32 k = threadIdx.x; k < p.cols; k += blockDim.x)
        out[k] = id < p.vocab ? row[k] * p.scale : __int_as_float(0x7fc00000);
}
RF_KERNEL void embedding_scalar_f16(const EmbeddingParams p) {
    RF_PDL_WAIT();
    const u32 id = p.ids[blockIdx.x];
    float* out = p.out + (u64)blockIdx.x * p.cols;
    const u16* row = (const u16*)(p.table + (u64)(id < p.vocab ? id : 0) * p.row_bytes);
    for (u32 k = threadIdx.x; k < p.cols; k += blockDim.x)
        out[k] = id < p.vocab ? rf_h2f(row[k]) * p.scale : __int_as_float(0x7fc00000);
}
