/* Numbers through the C ABI against float64 references computed here with naive loops:
 * decomposition (orthonormal U and V, descending S, reconstruction of W), projection on each side
 * (X - U (U^T X), X - (X V^T) V, both), leakage, projectors, two-phase sharded projection,
 * reconstruction, batched and listed SVDs, rank selection; row-major, column-major and padded
 * (strided) layouts, f32 and f64. */
#include "osft_test.h"

/* One layer: W (n x m) decomposed at k in `dtype`, with every layout choice. */
static void layer(osft_context *ctx, int64_t n, int64_t m, int64_t k, int32_t dtype, int row_major, int padded) {
    const int64_t r = n < m ? n : m, lo = r - k;
    const size_t es = dtype == OSFT_DTYPE_F64 ? sizeof(double) : sizeof(float);
    const double tol = dtype == OSFT_DTYPE_F64 ? 1e-11 : 2e-5;
    const int64_t ld = padded ? m + 3 : m; /* W row-major with a padded leading dimension */
    void *wbuf = calloc((size_t)(n * ld), es);
    void *uh = calloc((size_t)(n * k + 1), es), *sh = calloc((size_t)(k + 1), es), *vh = calloc((size_t)(k * m + 1), es);
    void *ul = calloc((size_t)(n * lo + 1), es), *sl = calloc((size_t)(lo + 1), es), *vl = calloc((size_t)(lo * m + 1), es);
    osft_matrix w = padded ? mat(wbuf, dtype, n, m, ld, 1) : dense(wbuf, dtype, n, m, row_major);
    osft_matrix U_h = dense(uh, dtype, n, k, row_major), S_h = dense(sh, dtype, k, 1, row_major),
                V_h = dense(vh, dtype, k, m, row_major);
    osft_matrix U_l = dense(ul, dtype, n, lo, !row_major), S_l = dense(sl, dtype, 1, lo, row_major),
                V_l = dense(vl, dtype, lo, m, !row_major);
    int64_t i, j, t, a;
    double s[64], err = 0.0, e[2] = {-1.0, -1.0}, v[64];
    size_t ws = 0;

    fill(&w);
    OK(osft_decompose_workspace_size(ctx, &w, dtype, &ws));
    CHECK(ws > 0);
    OK(osft_decompose(ctx, &w, k, &U_h, &S_h, &V_h, &U_l, &S_l, &V_l, dtype));

    /* S: descending, non-negative; read back through osft_read_vector too. */
    for (t = 0; t < r; t++) s[t] = t < k ? get(&S_h, 0, t, 0) : get(&S_l, 0, 0, t - k);
    for (t = 1; t < r; t++) CHECK(s[t - 1] >= s[t]);
    CHECK(s[r - 1] >= 0.0);
    if (k > 0) {
        OK(osft_read_vector(ctx, &S_h, v, 64));
        for (t = 0; t < k; t++) CHECK(v[t] == s[t]);
    }
    /* U = [U_h U_l] has orthonormal columns, V = [V_h; V_l] orthonormal rows. */
    for (a = 0; a < r; a++)
        for (t = 0; t < r; t++) {
            double du = 0.0, dv = 0.0;
            for (i = 0; i < n; i++)
                du += (a < k ? get(&U_h, 0, i, a) : get(&U_l, 0, i, a - k)) * (t < k ? get(&U_h, 0, i, t) : get(&U_l, 0, i, t - k));
            for (j = 0; j < m; j++)
                dv += (a < k ? get(&V_h, 0, a, j) : get(&V_l, 0, a - k, j)) * (t < k ? get(&V_h, 0, t, j) : get(&V_l, 0, t - k, j));
            CHECK_NEAR(du, a == t ? 1.0 : 0.0, 10 * tol);
            CHECK_NEAR(dv, a == t ? 1.0 : 0.0, 10 * tol);
        }
    /* Sign convention: in each column of U the entry of largest magnitude (the first on ties) is
     * positive. (V's rows flip along with U's columns: the reconstruction below checks that.) */
    for (t = 0; t < r; t++) {
        int64_t best = 0;
        for (i = 1; i < n; i++)
            if (fabs(t < k ? get(&U_h, 0, i, t) : get(&U_l, 0, i, t - k)) >
                fabs(t < k ? get(&U_h, 0, best, t) : get(&U_l, 0, best, t - k)))
                best = i;
        CHECK((t < k ? get(&U_h, 0, best, t) : get(&U_l, 0, best, t - k)) > 0.0);
    }
    /* W = U diag(S) V. */
    for (i = 0; i < n; i++)
        for (j = 0; j < m; j++) {
            double rec = 0.0;
            for (t = 0; t < r; t++)
                rec += (t < k ? get(&U_h, 0, i, t) : get(&U_l, 0, i, t - k)) * s[t] * (t < k ? get(&V_h, 0, t, j) : get(&V_l, 0, t - k, j));
            err += (rec - get(&w, 0, i, j)) * (rec - get(&w, 0, i, j));
        }
    CHECK(sqrt(err) / frob(&w, 0) < 10 * tol);
    OK(osft_reconstruction_error(ctx, &w, &U_h, &S_h, &V_h, &U_l, &S_l, &V_l, dtype, e, 2));
    CHECK(e[0] >= 0.0 && e[0] < 10 * tol);
    CHECK(e[1] == -1.0); /* only one batch entry written */
    if (k > 0) {
        double o = -1.0;
        OK(osft_orthonormality_error(ctx, OSFT_SIDE_LEFT, &U_h, &o, 1));
        CHECK(o >= 0.0 && o < 10 * tol);
        OK(osft_orthonormality_error(ctx, OSFT_SIDE_RIGHT, &V_h, &o, 1));
        CHECK(o >= 0.0 && o < 10 * tol);
    }

    /* Reconstruct into a fresh buffer of the other layout. */
    {
        void *out = calloc((size_t)(n * m), es);
        osft_matrix W2 = dense(out, dtype, n, m, !row_major);
        size_t rws = 0;
        OK(osft_reconstruct_workspace_size(ctx, &U_h, &S_h, &V_h, &U_l, &S_l, &V_l, &W2, dtype, &rws));
        OK(osft_reconstruct(ctx, &U_h, &S_h, &V_h, &U_l, &S_l, &V_l, &W2, dtype));
        for (i = 0; i < n; i++)
            for (j = 0; j < m; j++) CHECK_NEAR(get(&W2, 0, i, j), get(&w, 0, i, j), 10 * tol);
        free(out);
    }

    if (k > 0 && lo > 0) {
        /* Left: a gradient of U_low (n x lo), out of place then in place. */
        void *gx = calloc((size_t)(n * lo), es), *go = calloc((size_t)(n * lo), es);
        void *gv = calloc((size_t)(lo * m), es), *gw = calloc((size_t)(n * m), es);
        osft_matrix X = dense(gx, dtype, n, lo, row_major), O = dense(go, dtype, n, lo, !row_major);
        osft_matrix DV = dense(gv, dtype, lo, m, !row_major), G = dense(gw, dtype, n, m, row_major);
        double *ref = (double *)malloc(sizeof(double) * (size_t)(n * m)), *ref2 = (double *)malloc(sizeof(double) * (size_t)(n * m));
        double leak = -1.0;
        fill(&X);
        ref_project_left(&U_h, &X, 0, ref);
        OK(osft_project(ctx, OSFT_SIDE_LEFT, &U_h, NULL, &X, &O));
        CHECK(max_diff(&O, 0, ref) < 10 * tol);
        OK(osft_project(ctx, OSFT_SIDE_LEFT, &U_h, NULL, &X, NULL));
        CHECK(max_diff(&X, 0, ref) < 10 * tol);
        CHECK(ref_leakage_left(&U_h, &X, 0) < 10 * tol);
        OK(osft_leakage(ctx, OSFT_SIDE_LEFT, &U_h, &X, &leak, 1));
        CHECK(leak >= 0.0 && leak < 10 * tol);

        /* Right: a gradient of V_low (lo x m). */
        fill(&DV);
        ref_project_right(&V_h, &DV, 0, ref);
        OK(osft_project(ctx, OSFT_SIDE_RIGHT, NULL, &V_h, &DV, NULL));
        CHECK(max_diff(&DV, 0, ref) < 10 * tol);
        OK(osft_leakage(ctx, OSFT_SIDE_RIGHT, &V_h, &DV, &leak, 1));
        CHECK(leak >= 0.0 && leak < 10 * tol);

        /* Both sides of a dense gradient G (n x m): (I - U U^T) G (I - V^T V). */
        fill(&G);
        ref_project_left(&U_h, &G, 0, ref);
        {
            osft_matrix R = mat(ref, OSFT_DTYPE_F64, n, m, m, 1);
            ref_project_right(&V_h, &R, 0, ref2);
        }
        OK(osft_project(ctx, OSFT_SIDE_BOTH, &U_h, &V_h, &G, NULL));
        CHECK(max_diff(&G, 0, ref2) < 10 * tol);
        free(gx);
        free(go);
        free(gv);
        free(gw);
        free(ref);
        free(ref2);
    }
    free(wbuf);
    free(uh);
    free(sh);
    free(vh);
    free(ul);
    free(sl);
    free(vl);
}

/* Projector strategies agree with osft_project; two-phase sharded projection with the unsharded. */
static void projectors_and_shards(osft_context *ctx) {
    /* U_high: 12 x 7, so k > 0.556 n and AUTO picks the cached projector. */
    enum { N = 12, M = 7, K = 7, SPLIT = 5 };
    double w[N * M], uh[N * K], x[N * M], y[N * M], ref[N * M], ca[K * M], cb[K * M];
    osft_matrix W = mat(w, OSFT_DTYPE_F64, N, M, M, 1), U = mat(uh, OSFT_DTYPE_F64, N, K, K, 1);
    osft_matrix X = mat(x, OSFT_DTYPE_F64, N, M, M, 1), Y;
    const int32_t strategies[3] = {OSFT_STRATEGY_AUTO, OSFT_STRATEGY_COEFFICIENT, OSFT_STRATEGY_CACHED_PROJECTOR};
    int s;
    fill(&W);
    OK(osft_decompose(ctx, &W, K, &U, NULL, NULL, NULL, NULL, NULL, OSFT_DTYPE_F64));
    fill(&X);
    ref_project_left(&U, &X, 0, ref);
    for (s = 0; s < 3; s++) {
        osft_projector *p = NULL;
        int32_t l = -9, r = -9;
        memcpy(y, x, sizeof x);
        Y = mat(y, OSFT_DTYPE_F64, N, M, M, 1);
        OK(osft_projector_create(ctx, OSFT_SIDE_LEFT, &U, NULL, strategies[s], &p));
        OK(osft_projector_strategies(p, &l, &r));
        CHECK(r == -1);
        CHECK(l == (s == 0 ? OSFT_STRATEGY_CACHED_PROJECTOR : strategies[s]));
        OK(osft_projector_apply(p, &Y, NULL));
        CHECK(max_diff(&Y, 0, ref) < 1e-12);
        osft_projector_destroy(p);
    }
    /* Two shards of rows: partial coefficients (one row-major, one column-major), the caller's
     * sum (the all-reduce), then apply on each shard. */
    {
        osft_matrix Ua = mat(uh, OSFT_DTYPE_F64, SPLIT, K, K, 1), Ub = mat(uh + SPLIT * K, OSFT_DTYPE_F64, N - SPLIT, K, K, 1);
        osft_matrix Xa, Xb, Ca = mat(ca, OSFT_DTYPE_F64, K, M, M, 1), Cb = mat(cb, OSFT_DTYPE_F64, K, M, 1, K);
        int i, j;
        memcpy(y, x, sizeof x);
        Xa = mat(y, OSFT_DTYPE_F64, SPLIT, M, M, 1);
        Xb = mat(y + SPLIT * M, OSFT_DTYPE_F64, N - SPLIT, M, M, 1);
        OK(osft_project_partial(ctx, OSFT_SIDE_LEFT, &Ua, &Xa, &Ca));
        OK(osft_project_partial(ctx, OSFT_SIDE_LEFT, &Ub, &Xb, &Cb));
        for (i = 0; i < K; i++)
            for (j = 0; j < M; j++) ca[i * M + j] += cb[j * K + i];
        OK(osft_project_apply(ctx, OSFT_SIDE_LEFT, &Ua, &Ca, &Xa));
        OK(osft_project_apply(ctx, OSFT_SIDE_LEFT, &Ub, &Ca, &Xb));
        Y = mat(y, OSFT_DTYPE_F64, N, M, M, 1);
        CHECK(max_diff(&Y, 0, ref) < 1e-12);
    }
}

/* osft_svd's sign convention on its own: tall, wide and square f64 matrices, U and Vt in both
 * layouts. Each column of U has a positive entry of largest magnitude, and U diag(S) Vt is still
 * W (so Vt's rows were flipped with U's columns). */
static void svd_signs(osft_context *ctx) {
    static const int64_t shapes[4][2] = {{7, 4}, {4, 7}, {5, 5}, {8, 2}};
    double w[64], u[64], s[8], vt[64];
    int c, lay;
    for (c = 0; c < 4; c++)
        for (lay = 0; lay < 2; lay++) {
            const int64_t n = shapes[c][0], m = shapes[c][1], r = n < m ? n : m;
            osft_matrix W = dense(w, OSFT_DTYPE_F64, n, m, lay), U = dense(u, OSFT_DTYPE_F64, n, r, !lay),
                        S = dense(s, OSFT_DTYPE_F64, r, 1, 1), V = dense(vt, OSFT_DTYPE_F64, r, m, lay);
            int64_t i, j, t, best;
            double err = 0.0;
            fill(&W);
            OK(osft_svd(ctx, &W, &U, &S, &V, OSFT_DTYPE_F64));
            for (t = 0; t < r; t++) {
                for (best = 0, i = 1; i < n; i++)
                    if (fabs(get(&U, 0, i, t)) > fabs(get(&U, 0, best, t))) best = i;
                CHECK(get(&U, 0, best, t) > 0.0);
            }
            for (i = 0; i < n; i++)
                for (j = 0; j < m; j++) {
                    double rec = 0.0;
                    for (t = 0; t < r; t++) rec += get(&U, 0, i, t) * s[t] * get(&V, 0, t, j);
                    err += (rec - get(&W, 0, i, j)) * (rec - get(&W, 0, i, j));
                }
            /* f64 backward error: a few (n + m) ulps of ||W||. */
            CHECK(sqrt(err) <= 1e-13 * frob(&W, 0));
        }
}

/* A strided batch of 3 matrices through one call equals three single calls; the list form too. */
static void batches(osft_context *ctx) {
    enum { B = 3, N = 6, M = 4 };
    float w[B * N * M], s[B * M], s1[M], w2[5 * 9], s2[5];
    osft_matrix W = mat(w, OSFT_DTYPE_F32, N, M, 1, N), S = mat(s, OSFT_DTYPE_F32, M, 1, 1, 1);
    osft_matrix lw[2], ls[2];
    int b, t;
    W.batch = B;
    W.batch_stride = N * M;
    S.batch = B;
    S.batch_stride = M;
    fill(&W);
    OK(osft_svd(ctx, &W, NULL, &S, NULL, OSFT_DTYPE_F32));
    for (b = 0; b < B; b++) {
        osft_matrix Wb = mat(w + b * N * M, OSFT_DTYPE_F32, N, M, 1, N), Sb = mat(s1, OSFT_DTYPE_F32, 1, M, M, 1);
        double ss = 0.0;
        OK(osft_svd(ctx, &Wb, NULL, &Sb, NULL, OSFT_DTYPE_F32));
        for (t = 0; t < M; t++) {
            CHECK_NEAR(s1[t], s[b * M + t], 1e-5);
            ss += (double)s1[t] * s1[t];
        }
        CHECK_NEAR(ss, frob(&Wb, 0) * frob(&Wb, 0), 1e-4);
    }
    /* List: the first matrix of the batch and a 5 x 9 one. */
    lw[0] = mat(w, OSFT_DTYPE_F32, N, M, 1, N);
    ls[0] = mat(s1, OSFT_DTYPE_F32, M, 1, 1, 1);
    lw[1] = mat(w2, OSFT_DTYPE_F32, 5, 9, 9, 1);
    ls[1] = mat(s2, OSFT_DTYPE_F32, 5, 1, 1, 1);
    fill(&lw[1]);
    {
        size_t ws = 0;
        double ss = 0.0;
        OK(osft_svd_list_workspace_size(ctx, 2, lw, OSFT_DTYPE_F32, &ws));
        CHECK(ws > 0);
        OK(osft_svd_list(ctx, 2, lw, NULL, ls, NULL, OSFT_DTYPE_F32));
        for (t = 0; t < M; t++) CHECK_NEAR(s1[t], s[t], 1e-5);
        for (t = 0; t < 5; t++) ss += (double)s2[t] * s2[t];
        CHECK_NEAR(ss, frob(&lw[1], 0) * frob(&lw[1], 0), 1e-4);
    }
}

static void ranks(void) {
    const double s[5] = {5.0, 4.0, 3.0, 2.0, 1.0};
    const double imp[3] = {0.5, 1.0, 1.5};
    const int64_t full[3] = {100, 100, 100};
    int64_t k = -1, ks[3] = {-1, -1, -1};
    OK(osft_select_rank(s, 5, OSFT_RANK_FIXED, 2.0, &k));
    CHECK(k == 2);
    OK(osft_select_rank(s, 5, OSFT_RANK_FRACTION, 0.6, &k));
    CHECK(k == 3);
    /* energy: 25 / 55 < 0.5 <= 41 / 55 */
    OK(osft_select_rank(s, 5, OSFT_RANK_ENERGY, 0.5, &k));
    CHECK(k == 2);
    OK(osft_select_rank(s, 5, OSFT_RANK_ENTROPY_EFFECTIVE, 0.0, &k));
    {
        double h = 0.0;
        int i;
        for (i = 0; i < 5; i++) h -= s[i] / 15.0 * log(s[i] / 15.0);
        CHECK(k == (int64_t)floor(exp(h) + 0.5));
    }
    /* Fraction: PEFT's k = int(R * f), the double product truncated; values worked out by hand.
     * The products 100 * 0.29 = 28.999999999999996, 100 * 0.57 = 56.99999999999999, 100 * 0.58 =
     * 57.99999999999999 and 50 * 0.58 = 28.999999999999996 fall just short of the integer and are
     * truncated (as PEFT); 10 * 0.7 is 7 - 2^-51 exactly, which the multiply rounds to 7.0. */
    {
        static const struct {
            double f;
            int64_t r, k;
        } fr[] = {{0.29, 100, 28}, {0.57, 100, 56}, {0.58, 100, 57}, {0.58, 50, 28},  {0.7, 10, 7},
                  {0.56, 100, 56}, {0.25, 100, 25}, {0.3, 10, 3},    {0.07, 100, 7},  {0.28, 100, 28},
                  {1.0 / 3.0, 3, 1}, {0.1, 3, 0},   {0.2999999, 1000, 299}, {0.999, 1, 0}, {0.3, 4, 1},
                  {1.0, 7, 7},     {0.0, 7, 0}};
        static double ones[1000];
        size_t c;
        int i;
        for (i = 0; i < 1000; i++) ones[i] = 1.0;
        for (c = 0; c < sizeof fr / sizeof fr[0]; c++) {
            k = -1;
            OK(osft_select_rank(ones, (size_t)fr[c].r, OSFT_RANK_FRACTION, fr[c].f, &k));
            if (k != fr[c].k) fprintf(stderr, "fraction %.17g of %d: k = %d, want %d\n", fr[c].f, (int)fr[c].r, (int)k, (int)fr[c].k);
            CHECK(k == fr[c].k);
        }
        /* Every percentage of R = 100: 100 * (i / 100.0) is i exactly, or just short of it for
         * i = 29, 57 and 58 (truncated to i - 1). */
        for (i = 0; i <= 100; i++) {
            const int64_t want = (i == 29 || i == 57 || i == 58) ? i - 1 : i;
            k = -1;
            OK(osft_select_rank(ones, 100, OSFT_RANK_FRACTION, i / 100.0, &k));
            CHECK(k == want);
        }
    }
    /* The seed's adaptive rule, mean 1: I_n = I / 1.00000001. Defaults mrr = d/2 = 50, trr = d =
     * 100: CR = 50 + 50 I_n = 74.99999975 -> 75, 99.9999995 -> 100 (average importance keeps
     * trr), 124.99999925 -> clamped to d = 100. */
    OK(osft_adaptive_ranks(imp, full, 3, 0.5, 1.0, ks));
    CHECK(ks[0] == 75 && ks[1] == 100 && ks[2] == 100);
    /* mrr = 20, trr = 60: CR = 20 + 40 I_n = 39.9999998 -> 40, 59.9999996 -> 60, 79.9999994 -> 80. */
    OK(osft_adaptive_ranks(imp, full, 3, 0.2, 0.6, ks));
    CHECK(ks[0] == 40 && ks[1] == 60 && ks[2] == 80);
    /* A negative importance (mean 0.5): CR = 50 - 49.999999 = 1e-6 -> 0, raised to k = 1. */
    {
        const double signed_imp[3] = {-0.5, 0.5, 1.5};
        const double no_mean[3] = {-1.0, 0.5, 0.5};
        OK(osft_adaptive_ranks(signed_imp, full, 3, 0.5, 1.0, ks));
        CHECK(ks[0] == 1 && ks[1] == 100 && ks[2] == 100);
        /* Mean importance 0: refused, ranks untouched. */
        CHECK(osft_adaptive_ranks(no_mean, full, 3, 0.5, 1.0, ks) == OSFT_STATUS_INVALID_ARGUMENT);
        CHECK(ks[0] == 1 && ks[1] == 100 && ks[2] == 100);
    }
}

int main(void) {
    osft_context *ctx = NULL;
    int rm, pad;
    OK(osft_context_create(OSFT_BACKEND_CPU, 0, &ctx));
    if (!ctx) return finish("test_numeric");
    for (rm = 0; rm < 2; rm++) {
        layer(ctx, 9, 6, 2, OSFT_DTYPE_F32, rm, 0);
        layer(ctx, 5, 8, 3, OSFT_DTYPE_F32, rm, 0);
        layer(ctx, 7, 7, 4, OSFT_DTYPE_F64, rm, 0);
        layer(ctx, 6, 10, 0, OSFT_DTYPE_F64, rm, 0);
        layer(ctx, 6, 4, 4, OSFT_DTYPE_F32, rm, 0);
    }
    for (pad = 0; pad < 2; pad++) layer(ctx, 8, 5, 2, pad ? OSFT_DTYPE_F64 : OSFT_DTYPE_F32, pad, 1);
    projectors_and_shards(ctx);
    svd_signs(ctx);
    batches(ctx);
    ranks();
    osft_context_destroy(ctx);
    return finish("test_numeric");
}
