// Elementwise ops on f32 activations: add, row-broadcast bias, scale, soft-capping, row gather.
#include "compat.h"

struct EltParams {
    float* x;        // [count] (in place)
    const float* y;  // [count] for add, [cols] for add_bias
    u64 count;
    u32 cols;
    float s;         // scale factor or cap
};

#define RF_GRID_STRIDE(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

RF_KERNEL void add_f32(const EltParams p) {
    RF_PDL_WAIT();
    RF_GRID_STRIDE(i, p.count) p.x[i] += p.y[i];
}
RF_KERNEL void add_bias_f32(const EltParams p) {
    RF_PDL_WAIT();
    RF_GRID_STRIDE(i, p.count) p.x[i] += p.y[i % p.cols];
}
RF_KERNEL void scale_f32(const EltParams p) {
    RF_PDL_WAIT();
    RF_GRID_STRIDE(i, p.count) p.x[i] *= p.s;
}
RF_KERNEL void softcap_f32(const EltParams p) {
    RF_PDL_WAIT();
    RF_GRID_STRIDE(i, p.count) p.x[i] = p.s * tanhf(p.x[i] / p.s);
}

struct GetRowsParams {
    const float* x;   // [rows, cols]
    const u32* idx;   // [n]
    float* out;       // [n, cols]
    u32 rows;
    u32 cols;
};

// One block per output row; an index past the rows yields NaN (the Rust entry checks them).
RF_KERNEL void get_rows_f32(const GetRowsParams p) {
    RF_PDL_WAIT();
    const u32 r = p.idx[blockIdx.x];
    float* o = p.out + (u64)blockIdx.x * p.cols;
    for (u32 c = threadIdx.x; c < p.cols; c += blockDim.x)
        o[c] = r < p.rows ? p.x[(u64)r * p.cols + c] : __int_as_float(0x7fc00000);
}
