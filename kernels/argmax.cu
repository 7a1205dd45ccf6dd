// Row argmax: out[r] = the first index of the largest value of row r (NaN never wins).
// One block per row.
#include "compat.h"

struct ArgmaxParams {
    const float* x;  // [rows, n]
    u32* out;        // [rows]
    u32 n;
};

RF_DEVICE void rf_better(float& v, u32& i, float v2, u32 i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}

RF_KERNEL void argmax_f32(const ArgmaxParams p) {
    RF_PDL_WAIT();
    __shared__ float sv[32];
    __shared__ u32 si[32];
    const float* x = p.x + (u64)blockIdx.x * p.n;
    float v = -RF_INF;
    u32 idx = 0xFFFFFFFFu;
    for (u32 i = threadIdx.x; i < p.n; i += blockDim.x) rf_better(v, idx, x[i], i);
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1)
        rf_better(v, idx, rf_shfl_xor(v, m), (u32)rf_shfl_xor_i((int)idx, m));
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    if (lane == 0) { sv[warp] = v; si[warp] = idx; }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x / WARP_SIZE;
        v = lane < nw ? sv[lane] : -RF_INF;
        idx = lane < nw ? si[lane] : 0xFFFFFFFFu;
#pragma unroll
        for (int m = WARP_SIZE / 2; m > 0; m >>= 1)
            rf_better(v, idx, rf_shfl_xor(v, m), (u32)rf_shfl_xor_i((int)idx, m));
        if (lane == 0) p.out[blockIdx.x] = idx == 0xFFFFFFFFu ? 0 : idx;
    }
}
