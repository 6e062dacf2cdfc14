/* Every bad-input class through the C ABI returns its status with a non-empty message and leaves
 * poisoned output buffers byte-for-byte untouched; the panic boundary; versions, status strings,
 * the last-error message's life cycle; handles; the struct layout. C99. */
#include <stddef.h>

#include "osft_test.h"

enum { N = 6, M = 4, K = 2 };

/* A decomposition problem whose outputs are poisoned with a byte pattern. */
static float w[N * M], uh[N * K], sh[K], vh[K * M], ul[N * (M - K)];
static double res[4];
static unsigned char snapshot[sizeof w + sizeof uh + sizeof sh + sizeof vh + sizeof ul + sizeof res];

static void poison(void) {
    memset(uh, 0xA5, sizeof uh);
    memset(sh, 0x5A, sizeof sh);
    memset(vh, 0xC3, sizeof vh);
    memset(ul, 0x3C, sizeof ul);
    memset(res, 0x99, sizeof res);
}

static void take(unsigned char *dst) {
    unsigned char *p = dst;
    memcpy(p, w, sizeof w), p += sizeof w;
    memcpy(p, uh, sizeof uh), p += sizeof uh;
    memcpy(p, sh, sizeof sh), p += sizeof sh;
    memcpy(p, vh, sizeof vh), p += sizeof vh;
    memcpy(p, ul, sizeof ul), p += sizeof ul;
    memcpy(p, res, sizeof res);
}

/* Check that the buffers still hold the snapshot. */
static int untouched(void) {
    unsigned char now[sizeof snapshot];
    take(now);
    return memcmp(now, snapshot, sizeof now) == 0;
}

/* EXPECT_STATUS plus: nothing was written. */
#define REJECTED(call, want)         \
    do {                             \
        take(snapshot);              \
        EXPECT_STATUS(call, want);   \
        CHECK(untouched());          \
    } while (0)

static void bad_inputs(osft_context *ctx) {
    osft_matrix W = mat(w, OSFT_DTYPE_F32, N, M, M, 1);
    osft_matrix Uh = mat(uh, OSFT_DTYPE_F32, N, K, K, 1), Sh = mat(sh, OSFT_DTYPE_F32, K, 1, 1, 1),
                Vh = mat(vh, OSFT_DTYPE_F32, K, M, 1, K), Ul = mat(ul, OSFT_DTYPE_F32, N, M - K, 1, N);
    osft_matrix bad;
    double basis64[N * K];
    size_t bytes = 12345;
    int32_t backend = -7;
    void *stream = &bytes;
    osft_context *sentinel = (osft_context *)&backend, *out = sentinel;
    osft_projector *psentinel = (osft_projector *)&backend, *pout = psentinel;

    fill(&W);
    poison();

    /* The valid call works (on copies: the poisoned buffers must stay poisoned). */
    {
        float cuh[N * K], csh[K], cvh[K * M];
        osft_matrix a = mat(cuh, OSFT_DTYPE_F32, N, K, K, 1), b = mat(csh, OSFT_DTYPE_F32, K, 1, 1, 1),
                    c = mat(cvh, OSFT_DTYPE_F32, K, M, 1, K);
        OK(osft_decompose(ctx, &W, K, &a, &b, &c, NULL, NULL, NULL, OSFT_DTYPE_F32));
        CHECK(csh[0] >= csh[1] && csh[1] > 0.0f);
    }

    /* NULL handle, NULL descriptors, NULL data, NULL output pointers. */
    REJECTED(osft_decompose(NULL, &W, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_decompose(ctx, NULL, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_svd(ctx, &W, &Uh, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_NULL_POINTER);
    bad = Uh;
    bad.data = NULL;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_svd_workspace_size(ctx, &W, OSFT_DTYPE_F32, NULL), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_svd_workspace_size(NULL, &W, OSFT_DTYPE_F32, &bytes), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_context_backend(NULL, &backend), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_context_backend(ctx, NULL), OSFT_STATUS_NULL_POINTER);
    {
        int32_t alg = -7, mode = -7;
        REJECTED(osft_context_set_svd_algorithm(ctx, 7), OSFT_STATUS_INVALID_ARGUMENT);
        REJECTED(osft_context_set_svd_algorithm(NULL, OSFT_SVD_QR), OSFT_STATUS_NULL_POINTER);
        REJECTED(osft_context_set_math_mode(ctx, -1), OSFT_STATUS_INVALID_ARGUMENT);
        REJECTED(osft_context_get_svd_algorithm(ctx, NULL), OSFT_STATUS_NULL_POINTER);
        REJECTED(osft_context_get_math_mode(NULL, &mode), OSFT_STATUS_NULL_POINTER);
        CHECK(mode == -7);
        CHECK(osft_context_get_svd_algorithm(ctx, &alg) == OSFT_STATUS_OK && alg == OSFT_SVD_AUTO);
        CHECK(osft_context_get_math_mode(ctx, &mode) == OSFT_STATUS_OK && mode == OSFT_MATH_EXACT);
    }
    REJECTED(osft_context_get_stream(NULL, &stream), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_projector_apply(NULL, &W, NULL), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_project(ctx, OSFT_SIDE_RIGHT, &Uh, NULL, &Ul, NULL), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_select_rank(NULL, 3, OSFT_RANK_FRACTION, 0.5, NULL), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_leakage(ctx, OSFT_SIDE_LEFT, &Uh, &Ul, NULL, 1), OSFT_STATUS_NULL_POINTER);
    CHECK(bytes == 12345 && backend == -7 && stream == (void *)&bytes);

    /* Bad sizes. */
    bad = Uh;
    bad.rows = -N;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_SHAPE);
    bad = Uh;
    bad.rows = N - 1;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_SHAPE);
    bad = W;
    bad.batch = 0;
    REJECTED(osft_decompose(ctx, &bad, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_SHAPE);
    bad = W;
    bad.cols = 0;
    REJECTED(osft_svd(ctx, &bad, NULL, &Sh, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_SHAPE);
    /* Result arrays too short. */
    REJECTED(osft_read_vector(ctx, &Sh, res, 1), OSFT_STATUS_INVALID_SHAPE);
    REJECTED(osft_orthonormality_error(ctx, OSFT_SIDE_LEFT, &Uh, res, 0), OSFT_STATUS_INVALID_SHAPE);

    /* Bad strides: negative, overlapping (a zero stride, rows on top of columns). */
    bad = Vh;
    bad.col_stride = -K;
    REJECTED(osft_decompose(ctx, &W, K, &Uh, &Sh, &bad, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_STRIDE);
    bad = W;
    bad.row_stride = -1;
    REJECTED(osft_svd(ctx, &bad, NULL, &Sh, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_STRIDE);
    bad = Uh;
    bad.row_stride = 0;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERLAP);
    bad = Uh;
    bad.row_stride = 1;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERLAP);
    /* Outputs sharing memory with each other or with the input. */
    bad = mat(uh, OSFT_DTYPE_F32, K, M, M, 1);
    REJECTED(osft_decompose(ctx, &W, K, &Uh, &Sh, &bad, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERLAP);
    bad = mat(w, OSFT_DTYPE_F32, N, K, K, 1);
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERLAP);

    /* Overflow of rows * stride and of the batch extent. */
    bad = W;
    bad.rows = (int64_t)1 << 40;
    bad.row_stride = (int64_t)1 << 40;
    REJECTED(osft_decompose(ctx, &bad, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERFLOW);
    bad = W;
    bad.batch = (int64_t)1 << 62;
    bad.batch_stride = (int64_t)1 << 62;
    REJECTED(osft_svd_workspace_size(ctx, &bad, OSFT_DTYPE_F32, &bytes), OSFT_STATUS_OVERFLOW);
    bad = W;
    bad.row_stride = INT64_MAX;
    REJECTED(osft_svd(ctx, &bad, NULL, &Sh, NULL, OSFT_DTYPE_F32), OSFT_STATUS_OVERFLOW);

    /* Misaligned data. */
    bad = Uh;
    bad.data = (char *)uh + 2;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_MISALIGNED);

    /* Dtypes: unknown, a non-compute compute type, basis and X of different dtypes. */
    bad = W;
    bad.dtype = 42;
    REJECTED(osft_decompose(ctx, &bad, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_DTYPE_UNSUPPORTED);
    REJECTED(osft_decompose(ctx, &W, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_BF16), OSFT_STATUS_DTYPE_UNSUPPORTED);
    REJECTED(osft_decompose(ctx, &W, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, -3), OSFT_STATUS_DTYPE_UNSUPPORTED);
    bad = mat(basis64, OSFT_DTYPE_F64, N, K, K, 1);
    REJECTED(osft_project(ctx, OSFT_SIDE_LEFT, &bad, NULL, &Ul, NULL), OSFT_STATUS_DTYPE_UNSUPPORTED);

    /* k out of range. */
    REJECTED(osft_decompose(ctx, &W, M + 1, &Uh, &Sh, &Vh, NULL, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_RANK_OUT_OF_RANGE);
    REJECTED(osft_decompose(ctx, &W, -1, &Uh, &Sh, &Vh, NULL, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_RANK_OUT_OF_RANGE);
    {
        const double s[3] = {3.0, 2.0, 1.0};
        int64_t k = 77;
        REJECTED(osft_select_rank(s, 3, OSFT_RANK_FIXED, 4.0, &k), OSFT_STATUS_RANK_OUT_OF_RANGE);
        REJECTED(osft_select_rank(s, 3, OSFT_RANK_ENERGY, 1.5, &k), OSFT_STATUS_INVALID_ARGUMENT);
        REJECTED(osft_select_rank(s, 3, 99, 0.5, &k), OSFT_STATUS_INVALID_ARGUMENT);
        CHECK(k == 77);
    }

    /* A device pointer given to a CPU context; bad device fields. */
    bad = Uh;
    bad.device = OSFT_DEVICE_CUDA;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_DEVICE_MISMATCH);
    bad = W;
    bad.device = OSFT_DEVICE_CUDA;
    REJECTED(osft_svd(ctx, &bad, NULL, &Sh, NULL, OSFT_DTYPE_F32), OSFT_STATUS_DEVICE_MISMATCH);
    bad = Uh;
    bad.device = 7;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_ARGUMENT);
    bad = Uh;
    bad._reserved = 1;
    REJECTED(osft_decompose(ctx, &W, K, &bad, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_INVALID_ARGUMENT);

    /* Unknown enum values. */
    REJECTED(osft_project(ctx, 3, &Uh, NULL, &Ul, NULL), OSFT_STATUS_INVALID_ARGUMENT);
    REJECTED(osft_projector_create(ctx, OSFT_SIDE_LEFT, &Uh, NULL, 9, &pout), OSFT_STATUS_INVALID_ARGUMENT);
    REJECTED(osft_projector_create(ctx, OSFT_SIDE_LEFT, &Uh, NULL, OSFT_STRATEGY_AUTO, NULL), OSFT_STATUS_NULL_POINTER);
    REJECTED(osft_project_partial(ctx, OSFT_SIDE_BOTH, &Uh, &Ul, &Ul), OSFT_STATUS_INVALID_ARGUMENT);
    CHECK(pout == psentinel);

    /* Contexts: CUDA without a usable GPU (here: a device that does not exist), bad backends. */
    REJECTED(osft_context_create(OSFT_BACKEND_CUDA, 1000, &out), OSFT_STATUS_BACKEND_UNAVAILABLE);
    CHECK(strstr(osft_last_error_message(), "CUDA") != NULL);
    {
        /* Device 0: a context where a GPU is usable, else BACKEND_UNAVAILABLE and *out untouched. */
        osft_status st = osft_context_create(OSFT_BACKEND_CUDA, 0, &out);
        if (st == OSFT_STATUS_OK) {
            int32_t cb = -1;
            OK(osft_context_backend(out, &cb));
            CHECK(cb == OSFT_BACKEND_CUDA);
            osft_context_destroy(out);
            out = sentinel;
        } else {
            CHECK(st == OSFT_STATUS_BACKEND_UNAVAILABLE && osft_last_error_message()[0] != '\0');
            CHECK(out == sentinel);
        }
    }
    REJECTED(osft_context_create(5, 0, &out), OSFT_STATUS_INVALID_ARGUMENT);
    REJECTED(osft_context_create(OSFT_BACKEND_CPU, -1, &out), OSFT_STATUS_INVALID_ARGUMENT);
    REJECTED(osft_context_create(OSFT_BACKEND_CPU, 0, NULL), OSFT_STATUS_NULL_POINTER);
    CHECK(out == sentinel);
    REJECTED(osft_context_set_stream(ctx, &bytes), OSFT_STATUS_INVALID_ARGUMENT);

    /* A caller workspace too small: rejected before any write. */
    {
        double small[4];
        OK(osft_context_set_workspace(ctx, small, sizeof small));
        REJECTED(osft_decompose(ctx, &W, K, &Uh, &Sh, &Vh, &Ul, NULL, NULL, OSFT_DTYPE_F32), OSFT_STATUS_WORKSPACE_TOO_SMALL);
        REJECTED(osft_context_set_workspace(ctx, NULL, 64), OSFT_STATUS_NULL_POINTER);
        REJECTED(osft_context_set_workspace(ctx, (char *)small + 1, 16), OSFT_STATUS_MISALIGNED);
        OK(osft_context_release_workspace(ctx));
    }
}

/* Phase 2 of the sharded projection (X <- X - U C on the left, X - C V on the right) writes X and
 * reads the basis and the coefficients: an X overlapping either is OSFT_STATUS_OVERLAP and leaves
 * every element of the shared allocation as it was. The two inputs never overlap each other, so
 * the overlap named is the only fault; the same matrices placed apart are accepted. */
static void apply_aliasing(osft_context *ctx) {
    enum { AN = 6, AM = 4, AK = 4, TOTAL = 3 * AN * AM + 8 };
    double buf[TOTAL], before[TOTAL], apart[TOTAL];
    int side, c, i;
    for (side = 0; side < 2; side++) {
        const int32_t sd = side ? OSFT_SIDE_RIGHT : OSFT_SIDE_LEFT;
        /* Left: basis U (AN x AK), coef (AK x AM). Right: basis V (AK x AM), coef (AN x AK). */
        const int64_t br = side ? AK : AN, bc = side ? AM : AK, cr = side ? AN : AK, cc = side ? AK : AM;
        const int64_t blen = br * bc, clen = cr * cc, xlen = AN * AM;
        /* offsets of basis, coef, X */
        const int64_t cases[6][3] = {
            {0, TOTAL - clen, 3},                   /* X starts inside the basis */
            {0, TOTAL - clen, 0},                   /* X is the basis (left: same shape) */
            {xlen / 2, TOTAL - clen, 0},            /* the basis starts inside X */
            {TOTAL - blen, 0, clen - 2},            /* X starts inside the coefficients */
            {0, blen + xlen - 1, blen + 1},         /* X ends inside the coefficients */
            {TOTAL - blen, 0, 0},                   /* X starts at the coefficients */
        };
        for (c = 0; c < 6; c++) {
            osft_matrix B, C, X;
            for (i = 0; i < TOTAL; i++) buf[i] = rnd();
            memcpy(before, buf, sizeof buf);
            B = mat(buf + cases[c][0], OSFT_DTYPE_F64, br, bc, bc, 1);
            C = mat(buf + cases[c][1], OSFT_DTYPE_F64, cr, cc, cc, 1);
            X = mat(buf + cases[c][2], OSFT_DTYPE_F64, AN, AM, AM, 1);
            EXPECT_STATUS(osft_project_apply(ctx, sd, &B, &C, &X), OSFT_STATUS_OVERLAP);
            CHECK(memcmp(before, buf, sizeof buf) == 0);
            if (memcmp(before, buf, sizeof buf) != 0) fprintf(stderr, "  side %d case %d wrote\n", side, c);
            B.data = apart;
            C.data = apart + blen;
            X.data = apart + blen + clen;
            for (i = 0; i < TOTAL; i++) apart[i] = rnd();
            OK(osft_project_apply(ctx, sd, &B, &C, &X));
        }
    }
}

/* Versions, status strings, the message's life cycle, the panic boundary, handles. */
static void basics(void) {
    osft_context *ctx = NULL;
    int s;
    int32_t b = -1;
    void *stream = &b;

    CHECK(osft_abi_version() == OSFT_ABI_VERSION);
    CHECK(osft_version_major() == OSFT_VERSION_MAJOR && osft_version_minor() == OSFT_VERSION_MINOR &&
          osft_version_patch() == OSFT_VERSION_PATCH);
    for (s = OSFT_STATUS_OK; s <= OSFT_STATUS_NON_FINITE; s++) {
        const char *str = osft_status_string(s);
        CHECK(str != NULL && str[0] != '\0' && strcmp(str, "unknown status") != 0);
    }
    CHECK(strcmp(osft_status_string(-1), "unknown status") == 0);
    CHECK(strcmp(osft_status_string(18), "unknown status") == 0);
    CHECK(OSFT_STATUS_INTERNAL == 16 && OSFT_STATUS_NULL_POINTER == 1 && OSFT_DTYPE_BF16 == 3 &&
          OSFT_SIDE_BOTH == 2 && OSFT_BACKEND_AUTO == 2);

    /* Layout of the descriptor: every field explicit, no padding. */
    CHECK(sizeof(osft_matrix) == 72);
    CHECK(offsetof(osft_matrix, dtype) == 8 && offsetof(osft_matrix, _reserved) == 20);
    CHECK(offsetof(osft_matrix, rows) == 24 && offsetof(osft_matrix, batch_stride) == 64);

    /* The message: "" before any failure, set by a failure, cleared by the next success. */
    CHECK(osft_last_error_message() != NULL);
    EXPECT_STATUS(osft_debug_panic(), OSFT_STATUS_INTERNAL);
    CHECK(strncmp(osft_last_error_message(), "panic: ", 7) == 0);
    /* Queries that do not touch the message. */
    (void)osft_status_string(3);
    (void)osft_version_major();
    CHECK(strncmp(osft_last_error_message(), "panic: ", 7) == 0);

    /* AUTO gives CUDA where it works, else the CPU; the library works after a caught panic. */
    OK(osft_context_create(OSFT_BACKEND_AUTO, 0, &ctx));
    CHECK(osft_last_error_message()[0] == '\0');
    OK(osft_context_backend(ctx, &b));
    CHECK(b == OSFT_BACKEND_CPU || b == OSFT_BACKEND_CUDA);
    OK(osft_context_set_stream(ctx, NULL));
    OK(osft_context_get_stream(ctx, &stream));
    CHECK(stream == NULL);
    osft_context_destroy(ctx);
    osft_context_destroy(NULL);
    osft_projector_destroy(NULL);
}

/* A projector outlives the context it came from. */
static void projector_lifetime(void) {
    osft_context *ctx = NULL;
    osft_projector *p = NULL;
    double u[4 * 1] = {1.0, 0.0, 0.0, 0.0}, x[4 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
    osft_matrix U = mat(u, OSFT_DTYPE_F64, 4, 1, 1, 4), X = mat(x, OSFT_DTYPE_F64, 4, 2, 2, 1);
    OK(osft_context_create(OSFT_BACKEND_CPU, 0, &ctx));
    OK(osft_projector_create(ctx, OSFT_SIDE_LEFT, &U, NULL, OSFT_STRATEGY_COEFFICIENT, &p));
    osft_context_destroy(ctx);
    OK(osft_projector_apply(p, &X, NULL));
    CHECK(x[0] == 0.0 && x[1] == 0.0 && x[2] == 3.0 && x[7] == 8.0);
    osft_projector_destroy(p);
}

int main(void) {
    osft_context *ctx = NULL;
    basics();
    projector_lifetime();
    OK(osft_context_create(OSFT_BACKEND_CPU, 0, &ctx));
    if (ctx) bad_inputs(ctx);
    if (ctx) apply_aliasing(ctx);
    osft_context_destroy(ctx);
    return finish("test_errors");
}
