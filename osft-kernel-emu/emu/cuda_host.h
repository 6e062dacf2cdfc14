// The CUDA kernel environment on the host, enough for osft's kernels.cu to compile unchanged
// with a C++ compiler and run on the CPU: __global__ / __device__ functions are plain functions;
// threadIdx, blockIdx, blockDim and gridDim are thread-locals; one std::thread per CUDA thread of
// a block, blocks one after another (so __shared__ is block-static storage, refilled with 0xff
// bytes before each block so that a read before a write shows); __syncthreads is a barrier
// that reports threads reaching different barriers, or a barrier only some threads reach; the
// atomics take one mutex; __trap aborts the launch with an error. See emulator.cpp.
#pragma once

#include <math.h>
#include <string.h>

struct uint3 {
    unsigned x, y, z;
};
typedef uint3 dim3;

namespace osft_emu {
extern thread_local uint3 thread_idx, block_idx;
extern thread_local dim3 block_dim, grid_dim;
void syncthreads(int site);
[[noreturn]] void trap();
void atomic_begin();
void atomic_end();
}  // namespace osft_emu

#define threadIdx osft_emu::thread_idx
#define blockIdx osft_emu::block_idx
#define blockDim osft_emu::block_dim
#define gridDim osft_emu::grid_dim

#define __global__
#define __device__
#define __forceinline__ inline
// Block-static storage in one section, which the emulator poisons before every block.
#define __shared__ static __attribute__((section("osft_emu_shared")))
// Each __syncthreads() in the source is its own barrier site (__COUNTER__ differs per occurrence,
// also inside macro-generated kernels).
#define __syncthreads() osft_emu::syncthreads(__COUNTER__)
#define __trap() osft_emu::trap()

inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline double __longlong_as_double(long long u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}
inline long long __double_as_longlong(double d) {
    long long u;
    memcpy(&u, &d, 8);
    return u;
}
// Round-to-nearest products and sums (the emulation is built with -ffp-contract=off, so nothing
// is fused into an FMA, as these intrinsics guarantee on the device).
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }

inline double atomicAdd(double* p, double v) {
    osft_emu::atomic_begin();
    double old = *p;
    *p = old + v;
    osft_emu::atomic_end();
    return old;
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    osft_emu::atomic_begin();
    unsigned long long old = *p;
    *p = old + v;
    osft_emu::atomic_end();
    return old;
}
