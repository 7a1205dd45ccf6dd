// compat.h: one header mapping the CUDA names our kernels use to HIP. Included by every kernel
// file; the Rust side splices it into the source before NVRTC/hiprtc sees it, hipcc finds it by -I.
// No headers are needed under NVRTC/hiprtc: half conversions are written out here.
#pragma once

#if defined(__HIPCC__) || defined(__HIP__) || defined(__HIP_PLATFORM_AMD__)
#define RF_HIP 1
#if !defined(__HIPCC_RTC__)
#include <hip/hip_runtime.h>
#endif
#else
#define RF_CUDA 1
#endif

#ifndef WARP_SIZE
#define WARP_SIZE 32
#endif

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef short i16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

#define RF_KERNEL extern "C" __global__
#define RF_DEVICE static __device__ __forceinline__
// Explicit template specializations take no storage class.
#define RF_DEVICE_SPEC __device__ __forceinline__
#define RF_INF __int_as_float(0x7f800000)

#if defined(RF_CUDA)
RF_DEVICE float rf_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m, WARP_SIZE); }
RF_DEVICE int rf_shfl_xor_i(int v, int m) { return __shfl_xor_sync(0xffffffffu, v, m, WARP_SIZE); }
RF_DEVICE float rf_h2f(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
RF_DEVICE u16 rf_f2h(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#else
RF_DEVICE float rf_shfl_xor(float v, int m) { return __shfl_xor(v, m, WARP_SIZE); }
RF_DEVICE int rf_shfl_xor_i(int v, int m) { return __shfl_xor(v, m, WARP_SIZE); }
RF_DEVICE float rf_h2f(u16 h) { union { u16 u; _Float16 f; } x; x.u = h; return (float)x.f; }
RF_DEVICE u16 rf_f2h(float f) { union { u16 u; _Float16 f; } x; x.f = (_Float16)f; return x.u; }
#endif

// Programmatic dependent launch (CUDA, sm_90+). The CUDA driver launches every kernel with the
// programmatic-stream-serialization attribute (`cuda.rs`; `ROCMFORGE_PDL=0` turns it off), so a
// kernel may start while the previous one in the stream is still running. RF_PDL_WAIT() must be
// the first statement of every kernel, before any global memory access and before any return:
// `griddepcontrol.wait` blocks until the previous grid has completed and its writes are visible
// (reads after writes, and writes after reads of reused scratch). Because every block of every
// kernel waits before it can finish, a grid's completion implies its predecessors' completion.
// Then `griddepcontrol.launch_dependents` lets the next kernel be scheduled: its blocks become
// resident and sit in their own wait while this one runs, hiding the launch. Both instructions
// are no-ops when the kernel was launched without the attribute. Nothing on HIP or before sm_90.
// (Triggering before the wait was measured and dropped: docs/PERFORMANCE.md, "PDL".)
#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
#define RF_PDL_WAIT() asm volatile("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents;" ::: "memory")
#else
#define RF_PDL_WAIT() ((void)0)
#endif

RF_DEVICE float rf_bf2f(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Sum / max across one warp (wavefront).
RF_DEVICE float rf_warp_sum(float v) {
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v += rf_shfl_xor(v, m);
    return v;
}
RF_DEVICE float rf_warp_max(float v) {
#pragma unroll
    for (int m = WARP_SIZE / 2; m > 0; m >>= 1) v = fmaxf(v, rf_shfl_xor(v, m));
    return v;
}

// Sum across a block of blockDim.x threads (a multiple of WARP_SIZE, at most 1024); every thread
// gets the result. `scratch` holds at least 32 floats of shared memory.
RF_DEVICE float rf_block_sum(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = rf_warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return rf_warp_sum(v);
}
RF_DEVICE float rf_block_max(float v, float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE, warp = threadIdx.x / WARP_SIZE;
    const int nwarps = blockDim.x / WARP_SIZE;
    v = rf_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -RF_INF;
    return rf_warp_max(v);
}

// Integer dot product of 4 signed bytes of a and b, plus c (CUDA __dp4a). AMD: v_dot4_i32_i8 on
// the chips that have it (CDNA, RDNA2; RDNA3 has only the mixed-sign form), a portable sum
// elsewhere.
#if defined(RF_CUDA)
RF_DEVICE int rf_dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
#elif defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || defined(__gfx940__) || \
    defined(__gfx941__) || defined(__gfx942__) || defined(__gfx1030__) || defined(__gfx1031__) ||  \
    defined(__gfx1032__) || defined(__gfx1034__) || defined(__gfx1035__) || defined(__gfx1036__)
RF_DEVICE int rf_dp4a(int a, int b, int c) { return __builtin_amdgcn_sdot4(a, b, c, false); }
#else
RF_DEVICE int rf_dp4a(int a, int b, int c) {
#pragma unroll
    for (int i = 0; i < 32; i += 8) c += (int)(i8)(a >> i) * (int)(i8)(b >> i);
    return c;
}
#endif
