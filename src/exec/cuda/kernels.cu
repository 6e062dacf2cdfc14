// osft's device kernels, compiled at run time by NVRTC (see nvrtc.rs) and cached per context.
// Self-contained on purpose: no #include, so NVRTC needs no header search path, and no inline PTX,
// so the same source also compiles with a host C++ compiler under the emulation header of the
// kernel tests (osft-kernel-emu), which runs every kernel on the CPU.
//
// Minimum compute capability 7.5 (CUDA 13's oldest target; atomicAdd on doubles needs 6.0).
// Every cast rounds once, to nearest with ties to even, from the exact value (the loads widen
// exactly to double; the half-type stores round from the double's bits in software), as the CPU
// executor's casts do, so both executors give the same bits.
//
// Every elementwise kernel walks its index space with a grid-stride loop; sizes and strides are
// 64-bit. Element (b, i, j) of a strided matrix is at b * bs + i * rs + j * cs (in elements).
// The block kernels take any blockDim.x up to MAX_BLOCK (their shared arrays' size) and trap on a
// larger or non-1D block rather than write past them.

typedef unsigned short u16;
typedef long long i64;
typedef unsigned long long u64;

#define MAX_BLOCK 256

__device__ __forceinline__ double bits_f64(u64 u) { return __longlong_as_double((long long)u); }

// Exact widenings.
__device__ __forceinline__ double bf16_to_f64(u16 h) { return (double)__uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ double f16_to_f64(u16 h) {
    u64 sign = (u64)(h & 0x8000u) << 48, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f64(sign | 0x7ff0000000000000ull | (m << 42));  // inf, NaN (payload kept)
    if (e == 0) {                                                                // zero, subnormal: m 2^-24
        double v = (double)m * 5.9604644775390625e-8;
        return sign ? -v : v;
    }
    return bits_f64(sign | ((e - 15 + 1023) << 52) | (m << 42));
}

// v rounded once, to nearest with ties to even, to a binary format with `frac` fraction bits and
// `ebits` exponent bits (f16: 10, 5; bf16: 7, 8), from the f64's bits. Overflow gives infinity;
// NaN stays NaN, quiet, with the top bits of its payload (as the CPU executor's conversion).
__device__ __forceinline__ u16 f64_to_half_bits(double v, int frac, int ebits) {
    u64 u = (u64)__double_as_longlong(v);
    u16 sign = (u16)((u >> 48) & 0x8000u);
    u64 a = u & 0x7fffffffffffffffull;
    u16 inf = (u16)(((1u << ebits) - 1u) << frac);
    if (a > 0x7ff0000000000000ull) return (u16)(sign | inf | (1u << (frac - 1)) | ((a >> (52 - frac)) & ((1u << frac) - 1u)));
    if ((a >> 52) == 0) return sign;  // zero or an f64 subnormal: far below half the smallest target subnormal
    int te = (int)(a >> 52) - 1023 + ((1 << (ebits - 1)) - 1);  // the target's biased exponent
    if (te >= (1 << ebits) - 1) return (u16)(sign | inf);
    int shift = 52 - frac + (te >= 1 ? 0 : 1 - te);                 // significand bits dropped
    if (shift > 60) return sign;                                    // below a quarter of the smallest subnormal
    u64 m = (a & 0xfffffffffffffull) | (1ull << 52);
    u64 q = m >> shift, rem = m & ((1ull << shift) - 1), half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    // Normal: (te - 1) << frac plus the significand with its leading one (a carry out of the
    // significand moves into the exponent); subnormal: the significand alone.
    u64 bits = te >= 1 ? ((u64)(te - 1) << frac) + q : q;
    return bits >= inf ? (u16)(sign | inf) : (u16)(sign | bits);
}

// Loads widen to double (exactly); stores round from double once.
__device__ __forceinline__ double ld_f32(const void* p, i64 i) { return (double)((const float*)p)[i]; }
__device__ __forceinline__ double ld_f64(const void* p, i64 i) { return ((const double*)p)[i]; }
__device__ __forceinline__ double ld_f16(const void* p, i64 i) { return f16_to_f64(((const u16*)p)[i]); }
__device__ __forceinline__ double ld_bf16(const void* p, i64 i) { return bf16_to_f64(((const u16*)p)[i]); }
__device__ __forceinline__ void st_f32(void* p, i64 i, double v) { ((float*)p)[i] = (float)v; }
__device__ __forceinline__ void st_f64(void* p, i64 i, double v) { ((double*)p)[i] = v; }
__device__ __forceinline__ void st_f16(void* p, i64 i, double v) { ((u16*)p)[i] = f64_to_half_bits(v, 10, 5); }
__device__ __forceinline__ void st_bf16(void* p, i64 i, double v) { ((u16*)p)[i] = f64_to_half_bits(v, 7, 8); }

// The block kernels' launch assumption: a 1-D block of at most MAX_BLOCK threads.
__device__ __forceinline__ void check_block() {
    if (blockDim.x > MAX_BLOCK || blockDim.y != 1 || blockDim.z != 1) __trap();
}
// The smallest power of two >= blockDim.x: the first stride of a tree reduction over the block.
__device__ __forceinline__ unsigned tree_width() {
    unsigned w = 1;
    while (w < blockDim.x) w <<= 1;
    return w;
}

#define GRID_STRIDE(t, n) for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < (n); t += (i64)gridDim.x * blockDim.x)

// dst = alpha * src + beta * dst (dst not read when beta == 0). The host orders rows/cols so
// that consecutive threads touch consecutive destination elements.
#define AXPBY(S, D)                                                                              \
    extern "C" __global__ void osft_axpby_##S##_##D(i64 rows, i64 cols, i64 batch, double alpha, \
            const void* src, i64 srs, i64 scs, i64 sbs, double beta, void* dst, i64 drs, i64 dcs, i64 dbs) { \
        GRID_STRIDE(t, rows * cols * batch) {                                                    \
            i64 i = t % rows, r = t / rows, j = r % cols, b = r / cols;                          \
            double v = alpha == 0.0 ? 0.0 : __dmul_rn(alpha, ld_##S(src, b * sbs + i * srs + j * scs)); \
            i64 o = b * dbs + i * drs + j * dcs;                                                 \
            if (beta != 0.0) v = __dadd_rn(v, __dmul_rn(beta, ld_##D(dst, o)));  /* no FMA: as the CPU */ \
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

// out[b] += sum of squares of matrix b; grid (blocks_per_matrix, batch). out must be zeroed.
#define SUM_SQUARES(T)                                                                           \
    extern "C" __global__ void osft_sum_squares_##T(i64 rows, i64 cols, const void* x, i64 rs, i64 cs, i64 bs, double* out) { \
        __shared__ double part[MAX_BLOCK];                                                       \
        check_block();                                                           \
        i64 b = blockIdx.y, n = rows * cols;                                                     \
        double acc = 0.0;                                                                        \
        for (i64 t = (i64)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (i64)gridDim.x * blockDim.x) { \
            double v = ld_##T(x, b * bs + (t % rows) * rs + (t / rows) * cs);                    \
            acc += v * v;                                                                        \
        }                                                                                        \
        part[threadIdx.x] = acc;                                                                 \
        __syncthreads();                                                                         \
        for (unsigned s = tree_width() / 2; s > 0; s >>= 1) {                                    \
            if (threadIdx.x < s && threadIdx.x + s < blockDim.x) part[threadIdx.x] += part[threadIdx.x + s]; \
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

// cos(a_v, b_v) into out[v] (0 where either vector is zero); one block per vector pair (the host
// slices counts beyond the grid limit).
#define COSINE(T)                                                                                \
    extern "C" __global__ void osft_cosine_##T(i64 len, const void* a, i64 aes, i64 avs, const void* b, i64 bes, i64 bvs, double* out) { \
        __shared__ double d[MAX_BLOCK], na[MAX_BLOCK], nb[MAX_BLOCK];                            \
        check_block();                                                                           \
        i64 v = blockIdx.x;                                                                      \
        double s = 0.0, p = 0.0, q = 0.0;                                                        \
        for (i64 e = threadIdx.x; e < len; e += blockDim.x) {                                         \
            double x = ld_##T(a, v * avs + e * aes), y = ld_##T(b, v * bvs + e * bes);           \
            s += x * y; p += x * x; q += y * y;                                                  \
        }                                                                                        \
        d[threadIdx.x] = s; na[threadIdx.x] = p; nb[threadIdx.x] = q;                            \
        __syncthreads();                                                                         \
        for (unsigned k = tree_width() / 2; k > 0; k >>= 1) {                                    \
            if (threadIdx.x < k && threadIdx.x + k < blockDim.x) { d[threadIdx.x] += d[threadIdx.x + k]; na[threadIdx.x] += na[threadIdx.x + k]; nb[threadIdx.x] += nb[threadIdx.x + k]; } \
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
        __shared__ double best[MAX_BLOCK];                                                       \
        __shared__ i64 arg[MAX_BLOCK];                                                           \
        __shared__ int flip;                                                                     \
        check_block();                                                                           \
        i64 lo = blockIdx.y * lbs + blockIdx.x * lvs, ro = blockIdx.y * rbs + blockIdx.x * rvs;  \
        double bv = -1.0; i64 bi = 0;                                                            \
        for (i64 e = threadIdx.x; e < llen; e += blockDim.x) {                                        \
            double a = fabs(ld_##T(l, lo + e * les));                                            \
            if (a > bv) { bv = a; bi = e; }                                                      \
        }                                                                                        \
        best[threadIdx.x] = bv; arg[threadIdx.x] = bi;                                           \
        __syncthreads();                                                                         \
        for (unsigned k = tree_width() / 2; k > 0; k >>= 1) {                                    \
            if (threadIdx.x < k && threadIdx.x + k < blockDim.x) {                               \
                double o = best[threadIdx.x + k]; i64 oi = arg[threadIdx.x + k];                 \
                if (o > best[threadIdx.x] || (o == best[threadIdx.x] && oi < arg[threadIdx.x])) { best[threadIdx.x] = o; arg[threadIdx.x] = oi; } \
            }                                                                                    \
            __syncthreads();                                                                     \
        }                                                                                        \
        if (threadIdx.x == 0) flip = llen > 0 && ld_##T(l, lo + arg[0] * les) < 0.0;             \
        __syncthreads();                                                                         \
        if (!flip) return;                                                                       \
        for (i64 e = threadIdx.x; e < llen; e += blockDim.x) st_##T(l, lo + e * les, -ld_##T(l, lo + e * les)); \
        for (i64 e = threadIdx.x; e < rlen; e += blockDim.x) st_##T(r, ro + e * res, -ld_##T(r, ro + e * res)); \
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
