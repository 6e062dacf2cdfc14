/* osft from C: decompose a weight matrix, choose the frozen rank from its singular values,
 * project a gradient away from the frozen subspace, and measure what leaked.
 *
 *   cargo build --release
 *   cc -std=c99 -Iinclude examples/c/decompose_project.c -Ltarget/release -losft \
 *      -Wl,-rpath,$PWD/target/release -lm -o decompose_project && ./decompose_project
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "osft.h"

/* Print the failure and return from main with status 1. */
#define TRY(call)                                                                                   \
    do {                                                                                            \
        osft_status st_ = (call);                                                                   \
        if (st_ != OSFT_STATUS_OK) {                                                                \
            fprintf(stderr, "%s failed: %s: %s\n", #call, osft_status_string(st_), osft_last_error_message()); \
            return 1;                                                                               \
        }                                                                                           \
    } while (0)

/* A contiguous row-major float matrix on the host. */
static osft_matrix row_major(float *data, int64_t rows, int64_t cols) {
    osft_matrix m;
    memset(&m, 0, sizeof m); /* device = host, _reserved = 0 */
    m.data = data;
    m.dtype = OSFT_DTYPE_F32;
    m.rows = rows;
    m.cols = cols;
    m.row_stride = cols;
    m.col_stride = 1;
    m.batch = 1;
    return m;
}

int main(void) {
    enum { N = 32, M = 24, R = 24 };
    static float w[N * M], s[R], u_high[N * R], g[N * M];
    double s64[R], leak_before = 0.0, leak_after = 0.0;
    int64_t k = 0;
    int i, j;
    unsigned long long seed = 1;
    osft_context *ctx = NULL;
    osft_matrix W = row_major(w, N, M), S = row_major(s, R, 1), G = row_major(g, N, M), U_high;

    printf("osft %u.%u.%u (ABI %u)\n", osft_version_major(), osft_version_minor(), osft_version_patch(), osft_abi_version());
    /* A "pretrained" weight with a decaying spectrum, and a gradient (pseudo-random). */
    for (i = 0; i < N; i++)
        for (j = 0; j < M; j++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            w[i * M + j] = (float)(((double)(seed >> 11) / 9007199254740992.0 - 0.5) * exp(-0.08 * (i + j)));
            g[i * M + j] = (float)cos(0.11 * (i * M + j) * (i * M + j));
        }

    TRY(osft_context_create(OSFT_BACKEND_CPU, 0, &ctx));

    /* Singular values only, read to the host, then k by the energy rule (90%). */
    TRY(osft_svd(ctx, &W, NULL, &S, NULL, OSFT_DTYPE_F32));
    TRY(osft_read_vector(ctx, &S, s64, R));
    TRY(osft_select_rank(s64, R, OSFT_RANK_ENERGY, 0.9, &k));
    printf("singular values %.3f ... %.3f; k = %lld of %d holds 90%% of the energy\n", s64[0], s64[R - 1], (long long)k, R);

    /* Decompose at k: only U_high is wanted here (every other part may be NULL). */
    U_high = row_major(u_high, N, k);
    TRY(osft_decompose(ctx, &W, k, &U_high, NULL, NULL, NULL, NULL, NULL, OSFT_DTYPE_F32));

    /* Project the gradient in place: G <- G - U_high (U_high^T G). */
    TRY(osft_leakage(ctx, OSFT_SIDE_LEFT, &U_high, &G, &leak_before, 1));
    TRY(osft_project(ctx, OSFT_SIDE_LEFT, &U_high, NULL, &G, NULL));
    TRY(osft_leakage(ctx, OSFT_SIDE_LEFT, &U_high, &G, &leak_after, 1));
    printf("leakage ||U_high^T G|| / ||G||: before %.3e, after %.3e\n", leak_before, leak_after);

    /* Errors are statuses with a message, never crashes: */
    {
        osft_status st = osft_decompose(ctx, &W, R + 1, &U_high, NULL, NULL, NULL, NULL, NULL, OSFT_DTYPE_F32);
        printf("k = R + 1 -> %s: %s\n", osft_status_string(st), osft_last_error_message());
    }
    osft_context_destroy(ctx);
    return leak_after < 1e-5 ? 0 : 1;
}
