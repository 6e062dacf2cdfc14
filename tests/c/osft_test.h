/* Helpers shared by the C tests: checks that count failures, matrix descriptors, float64
 * reference arithmetic with naive loops. C99. */
#ifndef OSFT_TEST_H
#define OSFT_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osft.h"

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        g_checks++;                                                                    \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
            g_failures++;                                                              \
        }                                                                              \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                       \
    do {                                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                                  \
        g_checks++;                                                                                 \
        if (!(fabs(a_ - b_) <= (tol))) {                                                            \
            fprintf(stderr, "%s:%d: |%s - %s| = |%.17g - %.17g| > %g\n", __FILE__, __LINE__, #a, #b, \
                    a_, b_, (double)(tol));                                                         \
            g_failures++;                                                                           \
        }                                                                                           \
    } while (0)

/* A call that must succeed, and leave an empty (never NULL) message. */
#define OK(call)                                                                                  \
    do {                                                                                          \
        osft_status st_ = (call);                                                                 \
        const char *m_ = osft_last_error_message();                                               \
        g_checks++;                                                                               \
        if (st_ != OSFT_STATUS_OK || m_ == NULL || m_[0] != '\0') {                               \
            fprintf(stderr, "%s:%d: %s -> %d (%s): %s\n", __FILE__, __LINE__, #call, (int)st_,     \
                    osft_status_string(st_), m_ ? m_ : "(null message)");                         \
            g_failures++;                                                                         \
        }                                                                                         \
    } while (0)

/* A call that must fail with `want` and a non-empty message. */
#define EXPECT_STATUS(call, want)                                                                  \
    do {                                                                                           \
        osft_status st_ = (call);                                                                  \
        const char *m_ = osft_last_error_message();                                                \
        g_checks++;                                                                                \
        if (st_ != (want) || m_ == NULL || m_[0] == '\0') {                                        \
            fprintf(stderr, "%s:%d: %s -> %d (%s), wanted %d (%s); message: \"%s\"\n", __FILE__,    \
                    __LINE__, #call, (int)st_, osft_status_string(st_), (int)(want),               \
                    osft_status_string(want), m_ ? m_ : "(null)");                                 \
            g_failures++;                                                                          \
        } else if (getenv("OSFT_TEST_VERBOSE")) {                                                  \
            printf("  %-32s %s\n", osft_status_string(st_), m_);                                   \
        }                                                                                          \
    } while (0)

static inline int finish(const char *name) {
    if (g_failures) {
        fprintf(stderr, "%s: %d of %d checks FAILED\n", name, g_failures, g_checks);
        return 1;
    }
    printf("%s: all %d checks passed\n", name, g_checks);
    return 0;
}

/* --- descriptors ----------------------------------------------------------------------------- */

static inline osft_matrix mat(void *data, int32_t dtype, int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
    osft_matrix m;
    memset(&m, 0, sizeof m);
    m.data = data;
    m.dtype = dtype;
    m.device = OSFT_DEVICE_HOST;
    m.device_ordinal = 0;
    m._reserved = 0;
    m.rows = rows;
    m.cols = cols;
    m.row_stride = rs;
    m.col_stride = cs;
    m.batch = 1;
    m.batch_stride = 0;
    return m;
}

/* Row-major when `row_major`, column-major otherwise. */
static inline osft_matrix dense(void *data, int32_t dtype, int64_t rows, int64_t cols, int row_major) {
    return row_major ? mat(data, dtype, rows, cols, cols, 1) : mat(data, dtype, rows, cols, 1, rows);
}

/* Element (i, j) of batch entry b of a host f32/f64 descriptor, as double. */
static inline double get(const osft_matrix *m, int64_t b, int64_t i, int64_t j) {
    int64_t off = b * m->batch_stride + i * m->row_stride + j * m->col_stride;
    if (m->dtype == OSFT_DTYPE_F64) return ((const double *)m->data)[off];
    return (double)((const float *)m->data)[off];
}

static inline void set(const osft_matrix *m, int64_t b, int64_t i, int64_t j, double v) {
    int64_t off = b * m->batch_stride + i * m->row_stride + j * m->col_stride;
    if (m->dtype == OSFT_DTYPE_F64)
        ((double *)m->data)[off] = v;
    else
        ((float *)m->data)[off] = (float)v;
}

/* --- deterministic data ------------------------------------------------------------------------ */

static uint64_t g_rng = 88172645463325252ull;

/* Uniform in [-1, 1). */
static inline double rnd(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static inline void fill(const osft_matrix *m) {
    int64_t b, i, j;
    for (b = 0; b < m->batch; b++)
        for (i = 0; i < m->rows; i++)
            for (j = 0; j < m->cols; j++) set(m, b, i, j, rnd());
}

/* --- float64 references ------------------------------------------------------------------------ */

/* max |A^T A - I| over the columns of A (b-th entry). */
static inline double ortho_cols(const osft_matrix *a, int64_t b) {
    double worst = 0.0;
    int64_t p, q, i;
    for (p = 0; p < a->cols; p++)
        for (q = 0; q < a->cols; q++) {
            double d = 0.0;
            for (i = 0; i < a->rows; i++) d += get(a, b, i, p) * get(a, b, i, q);
            d -= (p == q) ? 1.0 : 0.0;
            if (fabs(d) > worst) worst = fabs(d);
        }
    return worst;
}

/* ||A||_F of entry b. */
static inline double frob(const osft_matrix *a, int64_t b) {
    double s = 0.0;
    int64_t i, j;
    for (i = 0; i < a->rows; i++)
        for (j = 0; j < a->cols; j++) s += get(a, b, i, j) * get(a, b, i, j);
    return sqrt(s);
}

/* ref = X - U (U^T X) (left) in float64, ref row-major rows x cols, for entry b of X. */
static inline void ref_project_left(const osft_matrix *u, const osft_matrix *x, int64_t b, double *ref) {
    int64_t n = x->rows, m = x->cols, k = u->cols, i, j, t, l;
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) ref[i * m + j] = get(x, b, i, j);
    for (t = 0; t < k; t++)
        for (j = 0; j < m; j++) {
            double c = 0.0;
            for (l = 0; l < n; l++) c += get(u, 0, l, t) * get(x, b, l, j);
            for (i = 0; i < n; i++) ref[i * m + j] -= get(u, 0, i, t) * c;
        }
}

/* ref = X - (X V^T) V (right) in float64 for entry b of X, V: k x m. */
static inline void ref_project_right(const osft_matrix *v, const osft_matrix *x, int64_t b, double *ref) {
    int64_t n = x->rows, m = x->cols, k = v->rows, i, j, t, l;
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) ref[i * m + j] = get(x, b, i, j);
    for (i = 0; i < n; i++)
        for (t = 0; t < k; t++) {
            double c = 0.0;
            for (l = 0; l < m; l++) c += get(x, b, i, l) * get(v, 0, t, l);
            for (j = 0; j < m; j++) ref[i * m + j] -= c * get(v, 0, t, j);
        }
}

/* max |X - ref| over entry b. */
static inline double max_diff(const osft_matrix *x, int64_t b, const double *ref) {
    double worst = 0.0;
    int64_t i, j;
    for (i = 0; i < x->rows; i++)
        for (j = 0; j < x->cols; j++) {
            double d = fabs(get(x, b, i, j) - ref[i * x->cols + j]);
            if (d > worst) worst = d;
        }
    return worst;
}

/* Leakage ||U^T X||_F / ||X||_F in float64. */
static inline double ref_leakage_left(const osft_matrix *u, const osft_matrix *x, int64_t b) {
    double num = 0.0, den = frob(x, b);
    int64_t t, j, l;
    for (t = 0; t < u->cols; t++)
        for (j = 0; j < x->cols; j++) {
            double c = 0.0;
            for (l = 0; l < x->rows; l++) c += get(u, 0, l, t) * get(x, b, l, j);
            num += c * c;
        }
    return den == 0.0 ? 0.0 : sqrt(num) / den;
}

#endif /* OSFT_TEST_H */
