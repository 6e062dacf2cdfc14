// osft's device kernels, compiled at run time by NVRTC (see nvrtc.rs) and cached per context.
// Self-contained on purpose: no #include, so NVRTC needs no header search path. Half types are
// handled as raw 16-bit patterns with PTX conversions (f16) and bit arithmetic (bf16).
//
// Every kernel walks its index space with a grid-stride loop; sizes and strides are 64-bit.
// Element (b, i, j) of a strided matrix is at b * bs + i * rs + j * cs (in elements).

typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                       // round to nearest even
    return (u16)(u >> 16);
}
__device__ __forceinline__ float f16_to_f32(u16 h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ u16 f32_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

// Loads widen to double; stores round from double (half types through float).
__device__ __forceinline__ double ld_f32(const void* p, i64 i) { return (double)((const float*)p)[i]; }
__device__ __forceinline__ double ld_f64(const void* p, i64 i) { return ((const double*)p)[i]; }
__device__ __forceinline__ double ld_f16(const void* p, i64 i) { return (double)f16_to_f32(((const u16*)p)[i]); }
__device__ __forceinline__ double ld_bf16(const void* p, i64 i) { return (double)bf16_to_f32(((const u16*)p)[i]); }
__device__ __forceinline__ void st_f32(void* p, i64 i, double v) { ((float*)p)[i] = (float)v; }
__device__ __forceinline__ void st_f64(void* p, i64 i, double v) { ((double*)p)[i] = v; }
__device__ __forceinline__ void st_f16(void* p, i64 i, double v) { ((u16*)p)[i] = f32_to_f16((float)v); }
__device__ __forceinline__ void st_bf16(void* p, i64 i, double v) { ((u16*)p)[i] = f32_to_bf16((float)v); }

#define GRID_STRIDE(t, n) for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < (n); t += (i64)gridDim.x * blockDim.x)

// dst = alpha * src + beta * dst (dst not read when beta == 0). The host orders rows/cols so
// that consecutive threads touch consecutive destination elements.
#define AXPBY(S, D)                                                                              \
    extern "C" __global__ void osft_axpby_##S##_##D(i64 rows, i64 cols, i64 batch, double alpha, \
            const void* src, i64 srs, i64 scs, i64 sbs, double beta, void* dst, i64 drs, i64 dcs, i64 dbs) { \
        GRID_STRIDE(t, rows * cols * batch) {                                                    \
            i64 i = t % rows, r = t / rows, j = r % cols, b = r / cols;                          \
            double v = alpha == 0.0 ? 0.0 : alpha * ld_##S(src, b * sbs + i * srs + j * scs);   \
            i64 o = b * dbs + i * drs + j * dcs;                                                 \
            if (beta != 0.0) v += beta * ld_##D(dst, o);                                         \
            st_##D(dst, o, v);                                                                   \
        }                                                                                        \
    }
#define AXPBY_FROM(S) AXPBY(S, f32) AXPBY(S, f64) AXPBY(S, f16) AXPBY(S, bf16)
AXPBY_FROM(f32)
AXPBY_FROM(f64)
AXPBY_FROM(f16)
AXPBY_FROM(bf16)

// C = diag(x) A (left != 0) or A diag(x), column-major, batched. C may be A.
#define DGMM(T)                                                                                  \
    extern "C" __global__ void osft_dgmm_##T(int left, i64 m, i64 n, const void* a, i64 lda, i64 sa, \
            const void* x, i64 incx, i64 sx, void* c, i64 ldc, i64 sc, i64 batch) {                 \
        GRID_STRIDE(t, m * n * batch) {                                                          \
            i64 i = t % m, r = t / m, j = r % n, b = r / n;                                      \
            double s = ld_##T(x, b * sx + (left ? i : j) * incx);                                \
            st_##T(c, b * sc + i + j * ldc, ld_##T(a, b * sa + i + j * lda) * s);                \
        }                                                                                        \
    }
DGMM(f32)
DGMM(f64)

// A[b] += alpha * I.
#define ADD_DIAG(T)                                                                              \
    extern "C" __global__ void osft_add_diagonal_##T(i64 n, void* a, i64 ld, i64 stride, i64 batch, double alpha) { \
        GRID_STRIDE(t, n * batch) {                                                              \
            i64 i = t % n, b = t / n, o = b * stride + i + i * ld;                               \
            st_##T(a, o, ld_##T(a, o) + alpha);                                                  \
        }                                                                                        \
    }
ADD_DIAG(f32)
ADD_DIAG(f64)

// Block reductions over 256 threads.
#define BLOCK 256

// out[b] += sum of squares of matrix b; grid (blocks_per_matrix, batch). out must be zeroed.
#define SUM_SQUARES(T)                                                                           \
    extern "C" __global__ void osft_sum_squares_##T(i64 rows, i64 cols, const void* x, i64 rs, i64 cs, i64 bs, double* out) { \
        __shared__ double part[BLOCK];                                                           \
        i64 b = blockIdx.y, n = rows * cols;                                                     \
        double acc = 0.0;                                                                        \
        for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (i64)gridDim.x * blockDim.x) { \
            double v = ld_##T(x, b * bs + (t % rows) * rs + (t / rows) * cs);                    \
            acc += v * v;                                                                        \
        }                                                                                        \
        part[threadIdx.x] = acc;                                                                 \
        __syncthreads();                                                                         \
        for (int s = BLOCK / 2; s > 0; s >>= 1) {                                                \
            if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];                     \
            __syncthreads();                                                                     \
        }                                                                                        \
        if (threadIdx.x == 0) atomicAdd(out + b, part[0]);                                       \
    }
SUM_SQUARES(f32)
SUM_SQUARES(f64)
SUM_SQUARES(f16)
SUM_SQUARES(bf16)

// out[b] += number of NaN/Inf entries of matrix b (compute types); grid (blocks, batch).
#define COUNT_NONFINITE(T)                                                                       \
    extern "C" __global__ void osft_count_nonfinite_##T(i64 rows, i64 cols, const void* x, i64 rs, i64 cs, i64 bs, unsigned long long* out) { \
        i64 b = blockIdx.y, n = rows * cols;                                                     \
        unsigned long long c = 0;                                                                \
        for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (i64)gridDim.x * blockDim.x) { \
            double v = ld_##T(x, b * bs + (t % rows) * rs + (t / rows) * cs);                    \
            c += !isfinite(v);                                                                   \
        }                                                                                        \
        if (c) atomicAdd(out + b, c);                                                            \
    }
COUNT_NONFINITE(f32)
COUNT_NONFINITE(f64)
COUNT_NONFINITE(f16)
COUNT_NONFINITE(bf16)

// cos(a_v, b_v) into out[v] (0 where either vector is zero); one block per vector pair.
#define COSINE(T)                                                                                \
    extern "C" __global__ void osft_cosine_##T(i64 len, const void* a, i64 aes, i64 avs, const void* b, i64 bes, i64 bvs, double* out) { \
        __shared__ double d[BLOCK], na[BLOCK], nb[BLOCK];                                        \
        i64 v = blockIdx.x;                                                                      \
        double s = 0.0, p = 0.0, q = 0.0;                                                        \
        for (i64 e = threadIdx.x; e < len; e += BLOCK) {                                         \
            double x = ld_##T(a, v * avs + e * aes), y = ld_##T(b, v * bvs + e * bes);           \
            s += x * y; p += x * x; q += y * y;                                                  \
        }                                                                                        \
        d[threadIdx.x] = s; na[threadIdx.x] = p; nb[threadIdx.x] = q;                            \
        __syncthreads();                                                                         \
        for (int k = BLOCK / 2; k > 0; k >>= 1) {                                                \
            if (threadIdx.x < k) { d[threadIdx.x] += d[threadIdx.x + k]; na[threadIdx.x] += na[threadIdx.x + k]; nb[threadIdx.x] += nb[threadIdx.x + k]; } \
            __syncthreads();                                                                     \
        }                                                                                        \
        if (threadIdx.x == 0) out[v] = (na[0] > 0.0 && nb[0] > 0.0) ? d[0] / (sqrt(na[0]) * sqrt(nb[0])) : 0.0; \
    }
COSINE(f32)
COSINE(f64)

// Sign convention: for vector pair (v, b) = (blockIdx.x, blockIdx.y), find the entry of largest
// magnitude of the left vector (the first on ties); if negative, negate both vectors.
#define SIGN_FIX(T)                                                                              \
    extern "C" __global__ void osft_sign_fix_##T(i64 llen, void* l, i64 les, i64 lvs, i64 lbs,   \
            i64 rlen, void* r, i64 res, i64 rvs, i64 rbs) {                                      \
        __shared__ double best[BLOCK];                                                           \
        __shared__ i64 arg[BLOCK];                                                               \
        __shared__ int flip;                                                                     \
        i64 lo = blockIdx.y * lbs + blockIdx.x * lvs, ro = blockIdx.y * rbs + blockIdx.x * rvs;  \
        double bv = -1.0; i64 bi = 0;                                                            \
        for (i64 e = threadIdx.x; e < llen; e += BLOCK) {                                        \
            double a = fabs(ld_##T(l, lo + e * les));                                            \
            if (a > bv) { bv = a; bi = e; }                                                      \
        }                                                                                        \
        best[threadIdx.x] = bv; arg[threadIdx.x] = bi;                                           \
        __syncthreads();                                                                         \
        for (int k = BLOCK / 2; k > 0; k >>= 1) {                                                \
            if (threadIdx.x < k) {                                                               \
                double o = best[threadIdx.x + k]; i64 oi = arg[threadIdx.x + k];                 \
                if (o > best[threadIdx.x] || (o == best[threadIdx.x] && oi < arg[threadIdx.x])) { best[threadIdx.x] = o; arg[threadIdx.x] = oi; } \
            }                                                                                    \
            __syncthreads();                                                                     \
        }                                                                                        \
        if (threadIdx.x == 0) flip = llen > 0 && ld_##T(l, lo + arg[0] * les) < 0.0;             \
        __syncthreads();                                                                         \
        if (!flip) return;                                                                       \
        for (i64 e = threadIdx.x; e < llen; e += BLOCK) st_##T(l, lo + e * les, -ld_##T(l, lo + e * les)); \
        for (i64 e = threadIdx.x; e < rlen; e += BLOCK) st_##T(r, ro + e * res, -ld_##T(r, ro + e * res)); \
    }
SIGN_FIX(f32)
SIGN_FIX(f64)

// Pointer arrays of one group of a grouped batched GEMM (cublasGemmGroupedBatchedEx takes device
// arrays of device pointers): entry i of each array is base + i * stride (bytes).
extern "C" __global__ void osft_fill_ptrs(i64 count, unsigned long long a, i64 sa, unsigned long long b, i64 sb,
                                          unsigned long long c, i64 sc, unsigned long long* pa, unsigned long long* pb,
                                          unsigned long long* pc) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < count; i += (i64)gridDim.x * blockDim.x) {
        pa[i] = a + (unsigned long long)(i * sa);
        pb[i] = b + (unsigned long long)(i * sb);
        pc[i] = c + (unsigned long long)(i * sc);
    }
}
