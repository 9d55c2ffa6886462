/* check_batch.c — the daemon's decoder (batch.c) and the PNG grids it serves.
 *
 *  - kernel: a row decodes to the same bytes alone, in any batch size and at
 *    any position, with every kernel this CPU has (AVX-512, AVX2, scalar
 *    fmaf), for awkward shapes too; and agrees with ld_model_decode (OpenBLAS)
 *    to float rounding;
 *  - batcher: many threads decoding at once share passes, and run up to
 *    max_passes passes at once, and every one of them still gets exactly
 *    its single-row bytes; counters add up; a lone request is decoded on
 *    its caller's thread; ld_batch_free waits for the passes running;
 *  - PNG writer: grids below and above the stored-block threshold, and over
 *    65535 bytes of scanlines, round-trip through libpng from many threads;
 *  - end to end: a real daemon with 8 HTTP threads under 16 concurrent
 *    clients returns, for every seed, the bytes it returned when idle
 *    (sample as JSON and PNG, decode), and its metrics show shared passes;
 *    the per-IP connection limit holds across the HTTP threads, and the
 *    acceptor spreads connections evenly over them.
 */
#define _GNU_SOURCE
#include "testutil.h"
#include "tu_daemon.h"

#include "latentd/batch.h"
#include "latentd/buf.h"
#include "latentd/image.h"
#include "latentd/model.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ fixtures */

/* A model of kind with the given hidden widths (generator/decoder), z and image. */
static ld_model_t *make_model(ld_kind_t kind, int z, int h, int w, int n_hidden,
                              const int *hidden, uint64_t seed)
{
    ld_arch_t a;
    ld_arch_default(kind, &a);
    a.z_dim = z;
    a.img_h = h;
    a.img_w = w;
    a.x_dim = h * w;
    a.dec.n = n_hidden;
    for (int i = 0; i < n_hidden; i++)
        a.dec.size[i] = hidden[i];
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_msg(ld_model_new(&a, seed, &m, &e) == LD_OK, "model_new: %s", e.msg);
    /* bigger biases than the init's, so that sigmoid outputs spread out */
    for (size_t i = 0; i < m->n_params; i += 7)
        m->params[i] *= 3.0f;
    return m;
}

static float *draw(const ld_model_t *m, uint64_t seed, int n)
{
    float *z = malloc((size_t)n * (size_t)m->arch.z_dim * sizeof *z);
    ld_model_draw_z(m, seed, 1.5f, n, z);
    return z;
}

static const char *const kernels[] = {"scalar", "avx2", "avx512"};

/* ------------------------------------------------------------ kernel */

START_TEST(test_rows_independent_of_batch)
{
    static const struct {
        ld_kind_t kind;
        int z, h, w, n_hidden, hidden[6];
    } shapes[] = {
        {LD_KIND_VAE, 20, 28, 28, 2, {64, 128}},             /* the default VAE */
        {LD_KIND_GAN, 100, 28, 28, 2, {256, 512}},           /* the default GAN */
        {LD_KIND_GAN, 3, 5, 7, 2, {5, 33}},                  /* nothing a multiple of 16 */
        {LD_KIND_VAE, 1, 1, 1, 0, {0}},                      /* one layer, one output */
        {LD_KIND_GAN, 17, 9, 15, 6, {130, 7, 16, 300, 1, 129}}, /* deep, odd panels */
    };
    const int NMAX = 70; /* more than one LD_BATCH_CHUNK */
    for (size_t si = 0; si < LD_ARRAY_LEN(shapes); si++) {
        ld_model_t *m = make_model(shapes[si].kind, shapes[si].z, shapes[si].h, shapes[si].w,
                                   shapes[si].n_hidden, shapes[si].hidden, 100 + si);
        size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
        float *z = draw(m, 7 + si, NMAX);
        float *one = malloc((size_t)NMAX * xd * sizeof *one);
        float *many = malloc((size_t)NMAX * xd * sizeof *many);
        float *blas = malloc((size_t)NMAX * xd * sizeof *blas);
        ld_err_t e;
        ld_batch_t *ref = NULL;
        ck_assert_int_eq(ld_batch_new(m, &(ld_batch_opts_t){.kernel = "scalar"}, &ref, &e), LD_OK);
        for (int r = 0; r < NMAX; r++)
            ck_assert_int_eq(ld_batch_decode(ref, 1, z + r * zd, one + r * xd, &e), LD_OK);
        /* OpenBLAS's order differs; the values agree to float rounding */
        ck_assert_int_eq(ld_model_decode(m, NMAX, z, blas, &e), LD_OK);
        double d = tu_max_rel_diff(one, blas, (size_t)NMAX * xd, 1e-3);
        ck_assert_msg(d < 1e-4, "shape %zu: batch kernel vs ld_model_decode: %g", si, d);
        for (size_t ki = 0; ki < LD_ARRAY_LEN(kernels); ki++) {
            ld_batch_t *b = NULL;
            int rc = ld_batch_new(m, &(ld_batch_opts_t){.kernel = kernels[ki]}, &b, &e);
            if (rc == LD_EUNSUPPORTED) { /* this CPU lacks it: said, not silent */
                if (si == 0)
                    tu_skip("batch kernel '%s': this CPU lacks it (%s)", kernels[ki], e.msg);
                continue;
            }
            ck_assert_msg(rc == LD_OK, "%s", e.msg);
            ck_assert_str_eq(ld_batch_kernel(b), kernels[ki]);
            /* every batch size, and rows at every offset of a pass */
            static const int sizes[] = {1, 2, 3, 4, 5, 7, 16, 47, 48, 49, 70};
            for (size_t k = 0; k < LD_ARRAY_LEN(sizes); k++) {
                int n = sizes[k];
                for (int off = 0; off + n <= NMAX; off += n > 7 ? NMAX : 5) {
                    memset(many, 0xff, (size_t)n * xd * sizeof *many);
                    ck_assert_int_eq(ld_batch_decode(b, n, z + off * zd, many, &e), LD_OK);
                    ck_assert_msg(memcmp(many, one + off * xd, (size_t)n * xd * sizeof *many) == 0,
                                  "shape %zu kernel %s: rows %d..%d decoded as a batch of %d "
                                  "differ from one at a time",
                                  si, kernels[ki], off, off + n - 1, n);
                }
            }
            ld_batch_free(b);
        }
        ld_batch_free(ref);
        ld_model_free(m);
        free(z);
        free(one);
        free(many);
        free(blas);
    }
}
END_TEST

START_TEST(test_bad_arguments)
{
    ld_model_t *m = make_model(LD_KIND_VAE, 4, 2, 3, 1, (int[]){8}, 1);
    ld_err_t e;
    ld_batch_t *b = NULL;
    ck_assert_int_eq(ld_batch_new(m, &(ld_batch_opts_t){.kernel = "sse9"}, &b, &e),
                     LD_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(e.msg, "sse9"));
    ck_assert_int_eq(ld_batch_new(m, NULL, &b, &e), LD_OK);
    float z[4] = {0}, x[6];
    ck_assert_int_eq(ld_batch_decode(b, -1, z, x, &e), LD_EINVAL);
    ck_assert_int_eq(ld_batch_decode(b, 1, NULL, x, &e), LD_EINVAL);
    ck_assert_int_eq(ld_batch_decode(b, 0, NULL, NULL, &e), LD_OK);
    ck_assert_int_eq(ld_batch_decode(b, 1, z, x, &e), LD_OK);
    for (int i = 0; i < 6; i++)
        ck_assert(x[i] > 0.0f && x[i] < 1.0f); /* the VAE's sigmoid was applied */
    ld_batch_free(b);
    ld_batch_free(NULL);
    ld_model_free(m);

    ld_arch_t a;
    ld_arch_default(LD_KIND_CLASSIFIER, &a);
    ck_assert_int_eq(ld_model_new(&a, 1, &m, &e), LD_OK);
    ck_assert_int_eq(ld_batch_new(m, NULL, &b, &e), LD_EUNSUPPORTED);
    ld_model_free(m);
}
END_TEST

/* A layer-list model (no dense decoder to pack) is not refused: the batcher
 * runs ld_model_decode on each request, so the bytes are a direct decode's,
 * and a request's rows do not depend on what else is queued. */
START_TEST(test_layer_model_falls_back)
{
    static const ld_netarch_t nets[] = {LD_NETS_DCGAN, LD_NETS_RESMLP};
    for (int k = 0; k < 2; k++) {
        ld_arch_t a;
        ld_err_t e;
        ld_arch_default(LD_KIND_GAN, &a);
        ck_assert_int_eq(ld_arch_set_net(&a, nets[k], &e), LD_OK);
        ld_model_t *m;
        ck_assert_int_eq(ld_model_new(&a, 3, &m, &e), LD_OK);
        ld_batch_t *b = NULL;
        ck_assert_msg(ld_batch_new(m, NULL, &b, &e) == LD_OK, "%s", e.msg);
        enum { N = 5 };
        float z[N * 100], x[N * 784], want[N * 784];
        ld_model_draw_z(m, 11, 1.0f, N, z);
        ck_assert_int_eq(ld_model_decode(m, N, z, want, &e), LD_OK);
        ck_assert_int_eq(ld_batch_decode(b, N, z, x, &e), LD_OK);
        ck_assert_msg(memcmp(x, want, sizeof x) == 0, "%s: batcher != decode",
                      ld_netarch_name(nets[k]));
        ck_assert_int_eq(ld_model_decode(m, 1, z, want, &e), LD_OK);
        ck_assert_int_eq(ld_batch_decode(b, 1, z, x, &e), LD_OK);
        ck_assert(memcmp(x, want, 784 * sizeof(float)) == 0);
        ld_batch_free(b);
        ld_model_free(m);
    }
}
END_TEST

/* ------------------------------------------------------------ batcher */

#define THREADS 8
#define ROWS 64

typedef struct {
    ld_batch_t *b;
    const ld_model_t *m;
    const float *z, *want; /* (ROWS, z_dim), (ROWS, x_dim) */
    int id, iters, big;
    pthread_barrier_t *go;
    atomic_int *bad;
    long rows_done, calls;
} worker_t;

static void *worker(void *p)
{
    worker_t *w = p;
    size_t zd = (size_t)w->m->arch.z_dim, xd = (size_t)w->m->arch.x_dim;
    float *x = malloc((size_t)ROWS * xd * sizeof *x);
    uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->id + 1);
    pthread_barrier_wait(w->go);
    for (int it = 0; it < w->iters; it++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        /* mostly one row, sometimes a few, the "big" thread many */
        int n = w->big && it % 4 == 0 ? ROWS : (int)(s % 8 == 0 ? 1 + s % 5 : 1);
        int off = (int)((s >> 8) % (uint64_t)(ROWS - n + 1));
        ld_err_t e;
        if (ld_batch_decode(w->b, n, w->z + (size_t)off * zd, x, &e) != LD_OK ||
            memcmp(x, w->want + (size_t)off * xd, (size_t)n * xd * sizeof *x) != 0)
            atomic_fetch_add(w->bad, 1);
        w->rows_done += n;
        w->calls++;
    }
    free(x);
    return NULL;
}

/* One round: THREADS threads running fn (worker or async_worker) on b at
 * once, iters calls each; adds their calls and rows; returns how many
 * results were wrong. */
static int run_round(ld_batch_t *b, const ld_model_t *m, const float *z, const float *want,
                     int round, int iters, void *(*fn)(void *), long *calls, long *rows)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    atomic_int bad = 0;
    worker_t w[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker_t){.b = b, .m = m, .z = z, .want = want, .id = round * THREADS + i,
                          .iters = iters, .big = i == 0, .go = &go, .bad = &bad};
        ck_assert_int_eq(pthread_create(&t[i], NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        *calls += w[i].calls;
        *rows += w[i].rows_done;
    }
    pthread_barrier_destroy(&go);
    return atomic_load(&bad);
}

/* A new batcher *b for m with options o (second_pass_rows 8 unless set, -1
 * for the batcher's own choice: the scenarios below queue one-row requests
 * behind a running pass, whatever this CPU's L2), ROWS latents z (seed
 * zseed) and their single-row decodes want (ROWS, x_dim).  Returns m. */
static ld_model_t *batch_fixture(ld_model_t *m, uint64_t zseed, const ld_batch_opts_t *o,
                                 ld_batch_t **b, float **z, float **want)
{
    ld_batch_opts_t opts = o ? *o : (ld_batch_opts_t){0};
    if (opts.second_pass_rows == 0)
        opts.second_pass_rows = 8;
    ld_err_t e;
    size_t xd = (size_t)m->arch.x_dim;
    *z = draw(m, zseed, ROWS);
    *want = malloc((size_t)ROWS * xd * sizeof **want);
    ck_assert_int_eq(ld_batch_new(m, &opts, b, &e), LD_OK);
    for (int r = 0; r < ROWS; r++)
        ck_assert_int_eq(
            ld_batch_decode(*b, 1, *z + r * m->arch.z_dim, *want + r * xd, &e), LD_OK);
    return m;
}

/* batch_fixture for a default GAN (model seed). */
static ld_model_t *gan_fixture(uint64_t seed, uint64_t zseed, const ld_batch_opts_t *o,
                               ld_batch_t **b, float **z, float **want)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    ld_model_t *m = NULL;
    ld_err_t e;
    ck_assert_int_eq(ld_model_new(&a, seed, &m, &e), LD_OK);
    return batch_fixture(m, zseed, o, b, z, want);
}

START_TEST(test_concurrent_callers_share_passes)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m =
        gan_fixture(5, 11, &(ld_batch_opts_t){.max_rows = 16, .max_passes = 2}, &b, &z, &want);
    ld_batch_stats_t before;
    ld_batch_stats(b, &before);
    ck_assert_int_eq((int)before.batches, ROWS);
    ck_assert_int_eq((int)before.shared, 0);
    ck_assert_int_eq(before.max_passes, 1);

    /* Shared passes and two passes at once need callers to overlap; on a
     * busy machine a round may see neither, so run rounds until both have
     * happened (normally in the first). */
    ld_batch_stats_t st = before;
    long calls = 0, rows = 0;
    for (int round = 0; round < 20 && (st.shared == before.shared || st.max_passes < 2);
         round++) {
        int bad = run_round(b, m, z, want, round, 150, worker, &calls, &rows);
        ck_assert_msg(bad == 0, "%d decodes under concurrency differ from the single-row bytes",
                      bad);
        ld_batch_stats(b, &st);
    }
    ck_assert_msg(st.shared > before.shared, "no pass ever served two requests");
    ck_assert_msg(st.max_passes == 2, "%d passes ran at once (max_passes 2)", st.max_passes);
    ck_assert_int_eq((long)(st.requests - before.requests), calls);
    ck_assert_int_eq((long)(st.rows - before.rows), rows);
    ck_assert_int_le((long)(st.batches - before.batches), calls);
    ck_assert_int_ge(st.max_requests, 2);
    /* a pass gathers whole requests up to max_rows (16); a bigger one runs alone */
    ck_assert_int_le(st.max_requests, 16);
    fprintf(stderr,
            "batch: %ld calls in %llu passes (%llu shared, at most %d requests, %d at once)\n",
            calls, (unsigned long long)(st.batches - before.batches),
            (unsigned long long)(st.shared - before.shared), st.max_requests, st.max_passes);
    ld_batch_free(b);
    ld_model_free(m);
    free(z);
    free(want);
}
END_TEST

/* Asynchronous callers (ld_batch_submit, as the HTTP threads use it): each
 * thread keeps several requests in flight and mixes in blocking ones. */
#define INFLIGHT 4

typedef struct {
    atomic_int calls;   /* done() calls for this slot's current request */
    int queued, n, off; /* the request in the slot (queued: done() expected) */
    float *x;           /* (ROWS, x_dim) */
} slot_t;

static void slot_done(void *arg)
{
    atomic_fetch_add_explicit(&((slot_t *)arg)->calls, 1, memory_order_release);
}

/* The slot's request has finished (waiting for done() if it was queued):
 * its bytes must be the single-row ones and done() called exactly as told. */
static void slot_settle(worker_t *w, slot_t *sl)
{
    size_t xd = (size_t)w->m->arch.x_dim;
    if (sl->n == 0)
        return;
    if (sl->queued)
        while (atomic_load_explicit(&sl->calls, memory_order_acquire) == 0)
            sched_yield();
    if (atomic_load(&sl->calls) != sl->queued ||
        memcmp(sl->x, w->want + (size_t)sl->off * xd, (size_t)sl->n * xd * sizeof(float)) != 0)
        atomic_fetch_add(w->bad, 1);
    sl->n = 0;
}

static void *async_worker(void *p)
{
    worker_t *w = p;
    size_t zd = (size_t)w->m->arch.z_dim, xd = (size_t)w->m->arch.x_dim;
    slot_t sl[INFLIGHT];
    for (int i = 0; i < INFLIGHT; i++) {
        sl[i] = (slot_t){.n = 0};
        sl[i].x = malloc((size_t)ROWS * xd * sizeof(float));
    }
    float *x = malloc((size_t)ROWS * xd * sizeof *x);
    uint64_t s = 0xD1B54A32D192ED03ULL * (uint64_t)(w->id + 1);
    pthread_barrier_wait(w->go);
    for (int it = 0; it < w->iters; it++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        int n = w->big && it % 8 == 0 ? ROWS : (int)(s % 8 == 0 ? 1 + s % 5 : 1);
        int off = (int)((s >> 8) % (uint64_t)(ROWS - n + 1));
        ld_err_t e;
        if (it % 7 == 3) { /* now and then a blocking caller among them */
            if (ld_batch_decode(w->b, n, w->z + (size_t)off * zd, x, &e) != LD_OK ||
                memcmp(x, w->want + (size_t)off * xd, (size_t)n * xd * sizeof *x) != 0)
                atomic_fetch_add(w->bad, 1);
        } else {
            slot_t *t = &sl[it % INFLIGHT];
            slot_settle(w, t);
            atomic_store(&t->calls, 0);
            t->n = n;
            t->off = off;
            memset(t->x, 0xFF, (size_t)n * xd * sizeof(float)); /* NaN until written */
            t->queued = 1;
            if (ld_batch_submit(w->b, n, w->z + (size_t)off * zd, t->x, slot_done, t, &e) !=
                LD_OK)
                atomic_fetch_add(w->bad, 1);
        }
        w->rows_done += n;
        w->calls++;
    }
    for (int i = 0; i < INFLIGHT; i++) {
        slot_settle(w, &sl[i]);
        free(sl[i].x);
    }
    free(x);
    return NULL;
}

START_TEST(test_async_submit)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(6, 12, NULL, &b, &z, &want);
    size_t xd = (size_t)m->arch.x_dim;
    ld_err_t e;

    /* a submission to an idle batcher is decoded on the caller's thread,
     * done() called once before ld_batch_submit returns (so an HTTP thread
     * replies at once, without suspending the connection); bad arguments
     * queue nothing and call nothing */
    float *x = malloc(xd * sizeof *x);
    memset(x, 0xFF, xd * sizeof *x);
    slot_t one = {.n = 1};
    atomic_init(&one.calls, 0);
    ck_assert_int_eq(ld_batch_submit(b, 1, z, x, NULL, &one, &e), LD_EINVAL);
    ck_assert_int_eq(ld_batch_submit(b, -1, z, x, slot_done, &one, &e), LD_EINVAL);
    ck_assert_int_eq(ld_batch_submit(b, 0, z, x, slot_done, &one, &e), LD_EINVAL);
    ck_assert_int_eq(ld_batch_submit(b, 1, z, x, slot_done, &one, &e), LD_OK);
    ck_assert_int_eq(atomic_load(&one.calls), 1);
    usleep(1000); /* a second, wrong call would come now */
    ck_assert_int_eq(atomic_load(&one.calls), 1);
    ck_assert(memcmp(x, want, xd * sizeof *x) == 0);
    free(x);

    /* Callers that do not wait put more requests in one pass than there are
     * threads (blocking callers never can); rounds until one does. */
    ld_batch_stats_t before, st;
    ld_batch_stats(b, &before);
    st = before;
    long calls = 0, rows = 0;
    for (int round = 0; round < 20 && st.max_requests <= THREADS; round++) {
        int bad = run_round(b, m, z, want, round, 200, async_worker, &calls, &rows);
        ck_assert_msg(bad == 0,
                      "%d asynchronous decodes differ from the single-row bytes or were "
                      "completed the wrong number of times",
                      bad);
        ld_batch_stats(b, &st);
    }
    ck_assert_int_eq((long)(st.requests - before.requests), calls);
    ck_assert_int_eq((long)(st.rows - before.rows), rows);
    ck_assert_msg(st.max_requests > THREADS,
                  "no pass served more requests (%d) than there are threads (%d)",
                  st.max_requests, THREADS);
    fprintf(stderr, "async: %ld calls in %llu passes (at most %d requests in one)\n", calls,
            (unsigned long long)(st.batches - before.batches), st.max_requests);
    ld_batch_free(b);
    ld_model_free(m);
    free(z);
    free(want);
}
END_TEST

/* With max_passes 1 no two passes ever overlap, however many callers (and
 * the drainer among them); with 1 or 2, leaders hand off (see
 * test_leader_hands_off_queue and test_lone_leader_leaves_queue_to_drainer)
 * and every request is still completed (slot_settle waits for each: a stranded one times the
 * test out) with the single-row bytes. */
START_TEST(test_capped_passes)
{
    const int cap = 1 + _i;
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(7 + (uint64_t)_i, 13, &(ld_batch_opts_t){.max_passes = cap},
                                &b, &z, &want);
    long calls = 0, rows = 0;
    ld_batch_stats_t st;
    for (int round = 0; round < 2; round++) {
        ck_assert_int_eq(run_round(b, m, z, want, round, 60, async_worker, &calls, &rows), 0);
        ck_assert_int_eq(run_round(b, m, z, want, round, 60, worker, &calls, &rows), 0);
    }
    ld_batch_stats(b, &st);
    ck_assert_int_le(st.max_passes, cap);
    ck_assert_int_eq((long)st.requests, calls + ROWS);
    ck_assert_int_eq((long)st.rows, rows + ROWS);
    fprintf(stderr, "max_passes %d: %ld calls, %llu passes, %llu hand-offs\n", cap, calls,
            (unsigned long long)st.batches, (unsigned long long)st.handed_off);
    ld_batch_free(b);
    ld_model_free(m);
    free(z);
    free(want);
}
END_TEST

/* ld_batch_free called while a caller is still leading a pass (here: in
 * its done callback) waits for that pass to end before freeing. */
typedef struct {
    ld_batch_t *b;
    const float *z;
    float *x;
    atomic_int entered, finished;
} slow_t;

static void slow_done(void *arg)
{
    slow_t *sl = arg;
    atomic_store(&sl->entered, 1);
    usleep(200 * 1000);
    atomic_store(&sl->finished, 1);
}

static void *slow_submitter(void *arg)
{
    slow_t *sl = arg;
    ld_err_t e;
    ck_assert_int_eq(ld_batch_submit(sl->b, 1, sl->z, sl->x, slow_done, sl, &e), LD_OK);
    return NULL;
}

START_TEST(test_free_waits_for_running_pass)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(8, 14, NULL, &b, &z, &want);
    slow_t sl = {.b = b, .z = z, .x = malloc((size_t)m->arch.x_dim * sizeof(float))};
    atomic_init(&sl.entered, 0);
    atomic_init(&sl.finished, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, slow_submitter, &sl), 0);
    while (!atomic_load(&sl.entered))
        usleep(1000);
    ld_batch_free(b);
    ck_assert_msg(atomic_load(&sl.finished), "ld_batch_free returned while a pass was running");
    pthread_join(t, NULL);
    ck_assert(memcmp(sl.x, want, (size_t)m->arch.x_dim * sizeof(float)) == 0);
    free(sl.x);
    ld_model_free(m);
    free(z);
    free(want);
}
END_TEST

/* A leader whose own request is done returns while another pass runs,
 * leaving what is queued to that pass.  With max_passes 2: pass A (thread
 * a) is held in its done callback; the main thread submits 8 rows (enough
 * for a second pass) and leads pass B; while B's callback runs, thread c
 * queues one row (no slot is free).  B's leader must return without taking
 * c's row; once A is released, A's leader (or the drainer it leaves the
 * queue to) decodes it. */
typedef struct {
    ld_batch_t *b;
    const float *z;
    size_t zd;
    float *xa, *xb, *xc;
    atomic_int a_in, a_go, b_in, c_queued, c_done;
} handoff_t;

/* Spin until *flag is set, at most 30 s (a loaded machine), else fail. */
static void await_flag(atomic_int *flag, const char *what)
{
    for (int i = 0; i < 30000 && !atomic_load(flag); i++)
        usleep(1000);
    ck_assert_msg(atomic_load(flag), "timed out waiting for %s", what);
}

static void handoff_a_done(void *arg)
{
    handoff_t *h = arg;
    atomic_store(&h->a_in, 1);
    await_flag(&h->a_go, "the main thread to release pass A");
}

static void handoff_b_done(void *arg)
{
    handoff_t *h = arg;
    atomic_store(&h->b_in, 1);
    await_flag(&h->c_queued, "thread c to queue its row");
}

static void handoff_c_done(void *arg)
{
    atomic_store(&((handoff_t *)arg)->c_done, 1);
}

static void *handoff_a(void *arg)
{
    handoff_t *h = arg;
    ld_err_t e;
    ck_assert_int_eq(ld_batch_submit(h->b, 1, h->z, h->xa, handoff_a_done, h, &e), LD_OK);
    return NULL;
}

static void *handoff_c(void *arg)
{
    handoff_t *h = arg;
    ld_err_t e;
    await_flag(&h->b_in, "pass B");
    ck_assert_int_eq(ld_batch_submit(h->b, 1, h->z + 9 * h->zd, h->xc, handoff_c_done, h, &e),
                     LD_OK);
    atomic_store(&h->c_queued, 1);
    return NULL;
}

START_TEST(test_leader_hands_off_queue)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(9, 15, &(ld_batch_opts_t){.max_passes = 2}, &b, &z, &want);
    size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
    handoff_t h = {.b = b, .z = z, .zd = zd}; /* rows: a 0, B 1-8, c 9 */
    h.xa = malloc(xd * sizeof(float));
    h.xb = malloc(8 * xd * sizeof(float));
    h.xc = malloc(xd * sizeof(float));
    atomic_init(&h.a_in, 0);
    atomic_init(&h.a_go, 0);
    atomic_init(&h.b_in, 0);
    atomic_init(&h.c_queued, 0);
    atomic_init(&h.c_done, 0);
    ld_batch_stats_t before, st;
    ld_batch_stats(b, &before);
    pthread_t ta, tc;
    ck_assert_int_eq(pthread_create(&ta, NULL, handoff_a, &h), 0);
    await_flag(&h.a_in, "pass A");
    ck_assert_int_eq(pthread_create(&tc, NULL, handoff_c, &h), 0);
    ld_err_t e;
    ck_assert_int_eq(ld_batch_submit(b, 8, z + zd, h.xb, handoff_b_done, &h, &e), LD_OK);
    /* back from leading B with c's row still queued for A */
    int c_done_early = atomic_load(&h.c_done);
    ld_batch_stats(b, &st);
    atomic_store(&h.a_go, 1);
    pthread_join(tc, NULL);
    pthread_join(ta, NULL);
    ck_assert_msg(!c_done_early, "the leader of pass B decoded a request queued after its own "
                                 "instead of leaving it to pass A");
    ck_assert_int_eq((long)(st.handed_off - before.handed_off), 1);
    await_flag(&h.c_done, "thread c's row (stranded?)");
    ck_assert(memcmp(h.xa, want, xd * sizeof(float)) == 0);
    ck_assert(memcmp(h.xb, want + xd, 8 * xd * sizeof(float)) == 0);
    ck_assert(memcmp(h.xc, want + 9 * xd, xd * sizeof(float)) == 0);
    free(h.xa);
    free(h.xb);
    free(h.xc);
    ld_batch_free(b);
    ld_model_free(m);
    free(z);
    free(want);
}
END_TEST

/* Requests whose done() records the thread that ran it and, if hold is
 * set, waits there until released: a pass held open at a chosen moment. */
typedef struct {
    atomic_int in, go, done;
    int hold;
    pthread_t by; /* the thread that ran done() (written before in) */
    int r0, n;    /* its rows of z */
    float *x;
} held_t;

static void held_done(void *arg)
{
    held_t *h = arg;
    h->by = pthread_self();
    atomic_store(&h->in, 1);
    if (h->hold)
        await_flag(&h->go, "the test to release a pass");
    atomic_store(&h->done, 1);
}

typedef struct {
    ld_batch_t *b;
    const float *z; /* its first row */
    int n;
    held_t *h;
    pthread_t t;
} held_sub_t;

static void *held_submitter(void *arg)
{
    held_sub_t *s = arg;
    ld_err_t e;
    ck_assert_int_eq(ld_batch_submit(s->b, s->n, s->z, s->h->x, held_done, s->h, &e), LD_OK);
    return NULL;
}

/* Submit n rows from row r0 on a new thread (or, with no thread, here). */
static void held_submit(held_sub_t *s, ld_batch_t *b, const float *z, size_t zd, int r0, int n,
                        held_t *h, size_t xd, int thread)
{
    h->x = malloc((size_t)n * xd * sizeof(float));
    h->r0 = r0;
    h->n = n;
    *s = (held_sub_t){.b = b, .z = z + (size_t)r0 * zd, .n = n, .h = h};
    if (thread)
        ck_assert_int_eq(pthread_create(&s->t, NULL, held_submitter, s), 0);
    else
        held_submitter(s);
}

/* Each of the k requests is completed with its single-row bytes; then
 * everything the scenario made is freed. */
static void held_end(held_t *const *hs, int k, ld_batch_t *b, ld_model_t *m, float *z, float *want)
{
    size_t xd = (size_t)m->arch.x_dim;
    for (int i = 0; i < k; i++) {
        held_t *h = hs[i];
        await_flag(&h->done, "a queued request (stranded?)");
        ck_assert(memcmp(h->x, want + (size_t)h->r0 * xd, (size_t)h->n * xd * sizeof(float)) ==
                  0);
        free(h->x);
    }
    ld_batch_free(b);
    ld_model_free(m);
    free(z);
    free(want);
}

/* A leader stops once another pass has taken its own request, and does not
 * go on decoding what arrived after it.  max_passes 2, max_rows 8, rows: A
 * 0, C 1, B 2-9, D 10-17.  Thread a leads pass {A}, held; C (1 row) queues;
 * thread b's B (8 rows) starts a second pass, which takes the head, {C},
 * held; a is released and leaves; thread d's D (8 rows) starts a pass that
 * takes {B}, b's own, held in B's done().  Released, b must return at once,
 * leaving D to d.  Before the fix b led on while its request was unfinished
 * (a load that kept the queue non-empty held its HTTP thread for seconds). */
START_TEST(test_leader_stops_once_its_request_is_taken)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(10, 16, &(ld_batch_opts_t){.max_passes = 2, .max_rows = 8}, &b,
                                &z, &want);
    size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
    held_t A = {.hold = 1}, C = {.hold = 1}, B = {.hold = 1}, D = {0};
    held_sub_t sa, sc, sb, sd;
    held_submit(&sa, b, z, zd, 0, 1, &A, xd, 1);
    await_flag(&A.in, "pass A");
    held_submit(&sc, b, z, zd, 1, 1, &C, xd, 0); /* queued: returns at once */
    ck_assert(!atomic_load(&C.in));
    held_submit(&sb, b, z, zd, 2, 8, &B, xd, 1);
    await_flag(&C.in, "thread b's pass {C}");
    ck_assert(pthread_equal(C.by, sb.t));
    atomic_store(&A.go, 1);
    pthread_join(sa.t, NULL);
    held_submit(&sd, b, z, zd, 10, 8, &D, xd, 1);
    await_flag(&B.in, "thread d's pass {B}");
    ck_assert(pthread_equal(B.by, sd.t));
    atomic_store(&C.go, 1);
    pthread_join(sb.t, NULL); /* b is back */
    ck_assert_msg(!atomic_load(&D.in), "thread b decoded D, queued after its own request, "
                                       "instead of returning once another pass took its own");
    atomic_store(&B.go, 1);
    pthread_join(sd.t, NULL);
    ck_assert(pthread_equal(D.by, sd.t));
    held_end((held_t *[]){&A, &C, &B, &D}, 4, b, m, z, want);
}
END_TEST

/* A leader leads one pass, not more, while another pass runs, even with its
 * own request still queued.  max_passes 2, max_rows 1 (a pass takes one
 * request), rows: A 0, C 1, C2 2, E 3-10, F 11-18.  Thread a leads {A},
 * held; C and C2 queue; thread e's E starts a second pass, {C}, held; a
 * leaves; thread f's F starts a pass, {C2}, held.  Released, e must return
 * with E still queued (f then decodes E, then F). */
START_TEST(test_leader_leads_one_pass_beside_another)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(11, 17, &(ld_batch_opts_t){.max_passes = 2, .max_rows = 1}, &b,
                                &z, &want);
    size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
    held_t A = {.hold = 1}, C = {.hold = 1}, C2 = {.hold = 1}, E = {0}, F = {0};
    held_sub_t sa, sc, sc2, se, sf;
    held_submit(&sa, b, z, zd, 0, 1, &A, xd, 1);
    await_flag(&A.in, "pass A");
    held_submit(&sc, b, z, zd, 1, 1, &C, xd, 0);
    held_submit(&sc2, b, z, zd, 2, 1, &C2, xd, 0);
    held_submit(&se, b, z, zd, 3, 8, &E, xd, 1);
    await_flag(&C.in, "thread e's pass {C}");
    atomic_store(&A.go, 1);
    pthread_join(sa.t, NULL);
    held_submit(&sf, b, z, zd, 11, 8, &F, xd, 1);
    await_flag(&C2.in, "thread f's pass {C2}");
    ck_assert(pthread_equal(C2.by, sf.t));
    atomic_store(&C.go, 1);
    pthread_join(se.t, NULL);
    ck_assert_msg(!atomic_load(&E.in), "thread e led a second pass while thread f's ran");
    atomic_store(&C2.go, 1);
    pthread_join(sf.t, NULL);
    ck_assert(pthread_equal(E.by, sf.t));
    held_end((held_t *[]){&A, &C, &C2, &E, &F}, 5, b, m, z, want);
}
END_TEST

/* The only leader, its own request done, leads LD_BATCH_LONE_PASSES more
 * passes and leaves what is still queued to the drainer thread.  max_passes
 * 1, max_rows 1 (a pass takes one request): thread a leads {A}, held; C[0]
 * .. C[LONE] queue (row 1 + i); released, a decodes C[0] .. C[LONE - 1]
 * and returns, and C[LONE] is decoded on a thread that is neither a nor
 * the test's. */
START_TEST(test_lone_leader_leaves_queue_to_drainer)
{
    enum { LONE = LD_BATCH_LONE_PASSES };
    ld_batch_t *b = NULL;
    float *z, *want;
    ld_model_t *m = gan_fixture(12, 18, &(ld_batch_opts_t){.max_passes = 1, .max_rows = 1}, &b,
                                &z, &want);
    size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
    held_t A = {.hold = 1}, C[LONE + 1];
    held_sub_t sa, sc[LONE + 1];
    memset(C, 0, sizeof C);
    ld_batch_stats_t before, st;
    ld_batch_stats(b, &before);
    held_submit(&sa, b, z, zd, 0, 1, &A, xd, 1);
    await_flag(&A.in, "pass A");
    for (int i = 0; i <= LONE; i++) {
        held_submit(&sc[i], b, z, zd, 1 + i, 1, &C[i], xd, 0);
        ck_assert(!atomic_load(&C[i].in));
    }
    atomic_store(&A.go, 1);
    pthread_join(sa.t, NULL);
    for (int i = 0; i <= LONE; i++)
        await_flag(&C[i].done, "a queued request (stranded?)");
    for (int i = 0; i < LONE; i++)
        ck_assert(pthread_equal(C[i].by, sa.t));
    ck_assert_msg(!pthread_equal(C[LONE].by, sa.t),
                  "the lone leader led more than %d passes after its own request was done "
                  "instead of leaving the queue to the drainer",
                  LONE);
    ck_assert(!pthread_equal(C[LONE].by, pthread_self()));
    ld_batch_stats(b, &st);
    ck_assert_int_eq((long)(st.handed_off - before.handed_off), 1);
    ck_assert_int_eq((long)(st.batches - before.batches), LONE + 2);
    held_t *all[LONE + 2] = {&A};
    for (int i = 0; i <= LONE; i++)
        all[1 + i] = &C[i];
    held_end(all, LONE + 2, b, m, z, want);
}
END_TEST

/* Thread a leads pass {A} (row 0), held; this thread then submits one row
 * (row 1).  Returns whether that row was decoded at once, on this thread,
 * in a second pass beside the held one (or else queued behind it). */
static int one_row_beside_held_pass(ld_model_t *m, const ld_batch_opts_t *o)
{
    ld_batch_t *b = NULL;
    float *z, *want;
    batch_fixture(m, 19, o, &b, &z, &want);
    size_t zd = (size_t)m->arch.z_dim, xd = (size_t)m->arch.x_dim;
    held_t A = {.hold = 1}, C = {0};
    held_sub_t sa, sc;
    held_submit(&sa, b, z, zd, 0, 1, &A, xd, 1);
    await_flag(&A.in, "pass A");
    held_submit(&sc, b, z, zd, 1, 1, &C, xd, 0);
    int beside = atomic_load(&C.done) && pthread_equal(C.by, pthread_self());
    atomic_store(&A.go, 1);
    pthread_join(sa.t, NULL);
    held_end((held_t *[]){&A, &C}, 2, b, m, z, want);
    return beside;
}

/* A second pass starts for second_pass_rows queued rows.  By default that
 * is one row when the packed weights fit in the CPU's L2 (a small decoder:
 * queueing would cost its caller more than decoding), else 8 (the default
 * GAN's 2.2 MB, which a one-row pass would stream from L3). */
START_TEST(test_second_pass_rows)
{
    ld_arch_t a;
    ld_arch_default(LD_KIND_GAN, &a);
    size_t gan_bytes = 4 * ((size_t)a.z_dim * (size_t)a.dec.size[0] +
                            (size_t)a.dec.size[0] * (size_t)a.dec.size[1] +
                            (size_t)a.dec.size[1] * (size_t)a.x_dim);
    ck_assert_msg(one_row_beside_held_pass(make_model(LD_KIND_GAN, 100, 28, 28, 2,
                                                      (int[]){256, 512}, 20),
                                           &(ld_batch_opts_t){.max_passes = 2,
                                                              .second_pass_rows = 1}),
                  "second_pass_rows 1: one row queued behind a running pass");
    ck_assert_msg(!one_row_beside_held_pass(make_model(LD_KIND_GAN, 8, 4, 4, 1, (int[]){16}, 21),
                                            &(ld_batch_opts_t){.max_passes = 2,
                                                               .second_pass_rows = 2}),
                  "second_pass_rows 2: one row started a pass of its own");
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (l2 <= 0) {
        tu_skip("the default second_pass_rows: this system does not say its L2 size");
        return;
    }
    ck_assert_msg(one_row_beside_held_pass(make_model(LD_KIND_GAN, 8, 4, 4, 1, (int[]){16}, 22),
                                           &(ld_batch_opts_t){.max_passes = 2,
                                                              .second_pass_rows = -1}),
                  "a decoder of a few KB (L2 %ld bytes) queued one row behind a running pass",
                  l2);
    if ((size_t)l2 >= gan_bytes) {
        tu_skip("the default GAN's %zu bytes of weights fit in this CPU's L2 (%ld)", gan_bytes,
                l2);
        return;
    }
    ck_assert_msg(!one_row_beside_held_pass(make_model(LD_KIND_GAN, 100, 28, 28, 2,
                                                       (int[]){256, 512}, 23),
                                            &(ld_batch_opts_t){.max_passes = 2,
                                                               .second_pass_rows = -1}),
                  "the default GAN (%zu bytes, L2 %ld) started a one-row pass beside another",
                  gan_bytes, l2);
}
END_TEST

/* ------------------------------------------------------------ PNG writer */

typedef struct {
    int n, h, w, cols, pad, iters;
    atomic_int *bad;
} png_job_t;

static void *png_worker(void *p)
{
    png_job_t *j = p;
    size_t px = (size_t)j->n * (size_t)j->h * (size_t)j->w;
    float *x = malloc(px * sizeof *x);
    for (int it = 0; it < j->iters; it++) {
        /* black background with textured blobs, like the models' images */
        for (size_t i = 0; i < px; i++) {
            uint32_t v = (uint32_t)(i * 2654435761u + (uint32_t)it * 40503u);
            x[i] = (i / 5 + (size_t)it) % 3 == 0 ? 0.0f : (float)(v >> 24) / 255.0f;
        }
        uint8_t *png = NULL;
        size_t len = 0;
        ld_err_t e;
        float *g = NULL;
        int gh = 0, gw = 0;
        if (ld_png_grid(x, j->n, j->h, j->w, j->cols, j->pad, &png, &len, &e) != LD_OK ||
            ld_png_decode(png, len, SIZE_MAX, &g, &gh, &gw, &e) != LD_OK) {
            atomic_fetch_add(j->bad, 1);
            free(png);
            continue;
        }
        int cols = j->cols, tw = j->w + j->pad, th = j->h + j->pad;
        for (int i = 0; i < j->n; i++)
            for (int r = 0; r < j->h; r++)
                for (int c = 0; c < j->w; c++) {
                    float v = x[((size_t)i * j->h + r) * j->w + c];
                    int q = v > 0 ? (int)(v * 255.0f + 0.5f) : 0;
                    float got = g[(size_t)(j->pad + i / cols * th + r) * gw + j->pad +
                                  i % cols * tw + c];
                    if (got != (float)q / 255.0f)
                        atomic_fetch_add(j->bad, 1);
                }
        free(png);
        free(g);
    }
    free(x);
    return NULL;
}

START_TEST(test_png_grids_roundtrip_threads)
{
    static const png_job_t shapes[] = {
        {1, 28, 28, 1, 2, 0, NULL},   /* 1056 bytes of scanlines: stored */
        {2, 28, 28, 2, 2, 0, NULL},   /* just over the threshold: deflate */
        {16, 28, 28, 4, 2, 0, NULL},
        {256, 28, 28, 16, 2, 0, NULL}, /* 232 KB of scanlines */
        {3, 1, 1, 3, 0, 0, NULL},      /* 1x3 pixels */
        {1, 200, 300, 1, 0, 0, NULL},  /* one large tile, no border */
    };
    atomic_int bad = 0;
    pthread_t t[LD_ARRAY_LEN(shapes)];
    png_job_t jobs[LD_ARRAY_LEN(shapes)];
    for (size_t i = 0; i < LD_ARRAY_LEN(shapes); i++) {
        jobs[i] = shapes[i];
        jobs[i].iters = shapes[i].n > 100 ? 3 : 20;
        jobs[i].bad = &bad;
        ck_assert_int_eq(pthread_create(&t[i], NULL, png_worker, &jobs[i]), 0);
    }
    for (size_t i = 0; i < LD_ARRAY_LEN(shapes); i++)
        pthread_join(t[i], NULL);
    ck_assert_int_eq(atomic_load(&bad), 0);

    /* the sizes: one 28x28 tile is stored (scanlines + zlib/PNG framing);
     * four are deflated, to less than storing them would take */
    float x[4 * 784];
    for (int i = 0; i < 4 * 784; i++)
        x[i] = i % 28 < 9 ? 0.0f : (float)(i % 200) / 255.0f;
    uint8_t *png;
    size_t len;
    ld_err_t e;
    ck_assert_int_eq(ld_png_grid(x, 1, 28, 28, 0, 2, &png, &len, &e), LD_OK);
    ck_assert_uint_eq(len, 8 + 25 + 13 + 12 + (32 * 33 + 11) + 12);
    free(png);
    ck_assert_int_eq(ld_png_grid(x, 4, 28, 28, 0, 2, &png, &len, &e), LD_OK);
    ck_assert_uint_lt(len, 8 + 25 + 13 + 12 + (62 * 63 + 11) + 12);
    free(png);
}
END_TEST

/* ------------------------------------------------------------ end to end */

static size_t on_body(char *p, size_t s, size_t n, void *ud)
{
    ld_buf_append(ud, p, s * n);
    return s * n;
}

/* A real daemon (tests/tu_daemon.c) serving a default-shape VAE ("vae") and
 * GAN ("gan") with `threads` HTTP threads; started and ready. */
static void daemon_start(tu_daemon_t *d, int threads, const char *extra_conf)
{
    tu_daemon_dirs(d, 4);
    ld_arch_t a;
    ld_err_t e;
    char path[1024];
    for (int k = 0; k < 2; k++) {
        ld_arch_default(k ? LD_KIND_GAN : LD_KIND_VAE, &a);
        ld_model_t *m = NULL;
        ck_assert_int_eq(ld_model_new(&a, 21 + (uint64_t)k, &m, &e), LD_OK);
        snprintf(path, sizeof path, "%s/%s.safetensors", d->models, k ? "gan" : "vae");
        ck_assert_msg(ld_model_save(m, path, &e) == LD_OK, "%s", e.msg);
        ld_model_free(m);
    }
    char text[2048];
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = %d\nmodels_dir = %s\nstate_dir = %s\n"
             "request_timeout = 30\naccess_log = no\n%s",
             threads, d->models, d->state, extra_conf ? extra_conf : "");
    tu_write_file(d->conf, text);
    tu_daemon_start(d, NULL);
}

/* POST json to path; the status, body into out (reset first). */
static long post(CURL *c, int port, const char *path, const char *json, ld_buf_t *out)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    out->len = 0;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    return status;
}

#define SEEDS 24
#define CASES 5

/* Request k (0..CASES-1) for seed s: path and body. */
static void request_for(int k, int s, char *path, size_t pl, ld_buf_t *body)
{
    static const char *const model[CASES] = {"gan", "gan", "gan", "vae", "vae"};
    body->len = 0;
    snprintf(path, pl, "/v1/models/%s/%s", model[k], k == 2 ? "decode" : "sample");
    if (k == 2) { /* decode a latent made from the seed */
        ld_buf_puts(body, "{\"z\":[");
        for (int i = 0; i < 100; i++)
            ld_buf_printf(body, "%s%.6f", i ? "," : "", sin(0.37 * (i + 1) * (s + 1)) * 1.7);
        ld_buf_puts(body, "]}");
    } else {
        ld_buf_printf(body, "{\"n\":%d,\"seed\":%d%s}", k == 4 ? 3 : 1, s,
                      k == 1 || k == 4 ? ",\"format\":\"png\"" : "");
    }
}

typedef struct {
    int port, id, iters;
    ld_buf_t (*want)[SEEDS];
    atomic_int *bad, *done;
} client_t;

static void *client(void *p)
{
    client_t *cl = p;
    CURL *c = curl_easy_init();
    ld_buf_t got = {0}, body = {0};
    char path[128];
    uint32_t s = 2166136261u ^ (uint32_t)cl->id;
    for (int it = 0; it < cl->iters; it++) {
        s = s * 1664525u + 1013904223u;
        int k = (int)((s >> 8) % CASES), seed = (int)((s >> 16) % SEEDS);
        request_for(k, seed, path, sizeof path, &body);
        long st = post(c, cl->port, path, body.data, &got);
        if (st != 200 || got.len != cl->want[k][seed].len ||
            memcmp(got.data, cl->want[k][seed].data, got.len) != 0)
            atomic_fetch_add(cl->bad, 1);
        atomic_fetch_add(cl->done, 1);
    }
    ld_buf_free(&got);
    ld_buf_free(&body);
    curl_easy_cleanup(c);
    return NULL;
}

/* The value of metric name{model="model"} in the /metrics text. */
static double metric(const char *text, const char *name, const char *model)
{
    char key[256];
    snprintf(key, sizeof key, "\n%s{model=\"%s\"} ", name, model);
    const char *p = strstr(text, key);
    return p ? atof(p + strlen(key)) : -1;
}

/* GET /metrics on handle c into m (NUL-terminated). */
static void get_metrics(CURL *c, int port, ld_buf_t *m)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, m);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    ld_buf_putc(m, '\0');
}

START_TEST(test_daemon_same_bytes_under_load)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_t d;
    daemon_start(&d, 8, NULL);
    CURL *c = curl_easy_init();
    ld_buf_t(*want)[SEEDS] = calloc(CASES, sizeof *want);
    ld_buf_t body = {0};
    char path[128];
    /* the idle answers: one request at a time */
    for (int k = 0; k < CASES; k++)
        for (int s = 0; s < SEEDS; s++) {
            request_for(k, s, path, sizeof path, &body);
            ck_assert_int_eq(post(c, d.port, path, body.data, &want[k][s]), 200);
            ck_assert_uint_gt(want[k][s].len, 100);
        }
    /* and again under load: 16 clients on 8 HTTP threads, until the metrics
     * show that concurrent GAN requests shared a pass (normally at once) */
    enum { CLIENTS = 16, ITERS = 150 };
    double passes = 0, reqs = 0, rows = 0;
    for (int round = 0; round < 5 && !(passes > 0 && passes < reqs); round++) {
        atomic_int bad = 0, done = 0;
        client_t cl[CLIENTS];
        pthread_t t[CLIENTS];
        for (int i = 0; i < CLIENTS; i++) {
            cl[i] = (client_t){.port = d.port, .id = round * CLIENTS + i, .iters = ITERS,
                               .want = want, .bad = &bad, .done = &done};
            ck_assert_int_eq(pthread_create(&t[i], NULL, client, &cl[i]), 0);
        }
        for (int i = 0; i < CLIENTS; i++)
            pthread_join(t[i], NULL);
        ck_assert_int_eq(atomic_load(&done), CLIENTS * ITERS);
        ck_assert_msg(atomic_load(&bad) == 0,
                      "%d of %d responses under load differ from the idle answer for their seed",
                      atomic_load(&bad), CLIENTS * ITERS);

        ld_buf_t m = {0};
        get_metrics(c, d.port, &m);
        passes = metric(m.data, "latentd_decode_batches_total", "gan");
        reqs = metric(m.data, "latentd_decode_batch_requests_total", "gan");
        rows = metric(m.data, "latentd_decode_batch_rows_total", "gan");
        ck_assert_msg(reqs > 0 && rows == reqs && passes <= reqs, "gan counters: %.0f %.0f %.0f",
                      passes, reqs, rows);
        ck_assert_double_gt(metric(m.data, "latentd_decode_batches_total", "vae"), 0);
        ld_buf_free(&m);
    }
    fprintf(stderr, "daemon: gan %.0f requests in %.0f passes\n", reqs, passes);
    ck_assert_msg(passes < reqs, "no two GAN requests ever shared a pass");

    for (int k = 0; k < CASES; k++)
        for (int s = 0; s < SEEDS; s++)
            ld_buf_free(&want[k][s]);
    free(want);
    ld_buf_free(&body);
    curl_easy_cleanup(c);
    tu_daemon_stop_ok(&d, 60);
    curl_global_cleanup();
}
END_TEST

/* interpolate decodes through the same asynchronous path as the other
 * routes: every request is one batcher request of `steps` rows, requests
 * from several clients share decoder passes, and each answer is still the
 * idle one. */
typedef struct {
    int port, iters;
    const ld_buf_t *want;
    atomic_int *bad;
} interp_client_t;

static const char interp_body[] =
    "{\"from\":{\"seed\":1},\"to\":{\"seed\":2},\"steps\":4,\"format\":\"npy\"}";

static void *interp_client(void *p)
{
    interp_client_t *ic = p;
    CURL *c = curl_easy_init();
    ld_buf_t got = {0};
    for (int i = 0; i < ic->iters; i++) {
        long st = post(c, ic->port, "/v1/models/gan/interpolate", interp_body, &got);
        if (st != 200 || got.len != ic->want->len || memcmp(got.data, ic->want->data, got.len))
            atomic_fetch_add(ic->bad, 1);
    }
    ld_buf_free(&got);
    curl_easy_cleanup(c);
    return NULL;
}

START_TEST(test_daemon_interpolate_shares_passes)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_t d;
    daemon_start(&d, 8, NULL);
    CURL *c = curl_easy_init();
    ld_buf_t want = {0};
    ck_assert_int_eq(post(c, d.port, "/v1/models/gan/interpolate", interp_body, &want), 200);
    enum { CLIENTS = 8, ITERS = 40 };
    double passes = 0, reqs = 0, rows = 0, sent = 1;
    for (int round = 0; round < 5 && !(passes > 0 && passes < reqs); round++) {
        atomic_int bad = 0;
        interp_client_t ic[CLIENTS];
        pthread_t t[CLIENTS];
        for (int i = 0; i < CLIENTS; i++) {
            ic[i] = (interp_client_t){.port = d.port, .iters = ITERS, .want = &want, .bad = &bad};
            ck_assert_int_eq(pthread_create(&t[i], NULL, interp_client, &ic[i]), 0);
        }
        for (int i = 0; i < CLIENTS; i++)
            pthread_join(t[i], NULL);
        sent += CLIENTS * ITERS;
        ck_assert_msg(atomic_load(&bad) == 0, "%d interpolate answers under load differ",
                      atomic_load(&bad));
        ld_buf_t m = {0};
        get_metrics(c, d.port, &m);
        passes = metric(m.data, "latentd_decode_batches_total", "gan");
        reqs = metric(m.data, "latentd_decode_batch_requests_total", "gan");
        rows = metric(m.data, "latentd_decode_batch_rows_total", "gan");
        ld_buf_free(&m);
        /* steps 4: the two ends and two frames between them */
        ck_assert_msg(reqs == sent && rows == 4 * sent,
                      "%.0f interpolate requests: %.0f batcher requests, %.0f rows", sent, reqs,
                      rows);
    }
    fprintf(stderr, "interpolate: %.0f requests in %.0f passes\n", reqs, passes);
    ck_assert_msg(passes > 0 && passes < reqs,
                  "interpolate requests never shared a pass (%.0f requests, %.0f passes): "
                  "decoded on the HTTP thread?", reqs, passes);
    ld_buf_free(&want);
    curl_easy_cleanup(c);
    tu_daemon_stop_ok(&d, 60);
    curl_global_cleanup();
}
END_TEST

/* A keep-alive connection that has had one request answered (so the daemon
 * has accepted and counted it), or -1 if the daemon closed it instead. */
static int open_counted(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return -1;
    }
    char buf[1024];
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < sizeof buf - 1 && poll(&p, 1, 10000) == 1) {
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
        buf[got] = '\0';
        if (strstr(buf, "\r\n\r\n") && strstr(buf, "\"ok\""))
            return fd;
    }
    close(fd);
    return -1;
}

/* Clients that send a GAN request and reset the connection without reading:
 * some of those requests wait in the decode queue with their connection
 * suspended, and end when it is resumed.  Nothing leaks (the sanitizer build
 * fails the exit status on a leak), nothing crashes, and the daemon serves
 * the next client normally. */
typedef struct {
    int port, iters;
    atomic_int *sent; /* requests written */
} raw_client_t;

/* A connection to the daemon with a GAN sample request (JSON body) written
 * to it and nothing read; -1 if that failed. */
static int raw_gan_sample(int port, const char *body)
{
    char req[512];
    int len = snprintf(req, sizeof req,
                       "POST /v1/models/gan/sample HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                       strlen(body), body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || write(fd, req, (size_t)len) != len) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *rude_client(void *p)
{
    raw_client_t *r = p;
    for (int i = 0; i < r->iters; i++) {
        int fd = raw_gan_sample(r->port, "{\"n\":64,\"seed\":3,\"format\":\"png\"}");
        if (fd < 0)
            continue;
        atomic_fetch_add(r->sent, 1);
        tu_msleep(i % 3); /* some land while the request is queued, some later */
        struct linger lg = {1, 0}; /* close with RST */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
    }
    return NULL;
}

START_TEST(test_daemon_clients_gone_while_queued)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_t d;
    daemon_start(&d, 4, NULL);
    enum { RUDE = 8, ITERS = 40 };
    atomic_int sent = 0;
    raw_client_t r[RUDE];
    pthread_t t[RUDE];
    for (int i = 0; i < RUDE; i++) {
        r[i] = (raw_client_t){.port = d.port, .iters = ITERS, .sent = &sent};
        ck_assert_int_eq(pthread_create(&t[i], NULL, rude_client, &r[i]), 0);
    }
    for (int i = 0; i < RUDE; i++)
        pthread_join(t[i], NULL);
    ck_assert_int_gt(atomic_load(&sent), RUDE * ITERS / 2);
    CURL *c = curl_easy_init();
    ld_buf_t out = {0};
    /* the reset requests are still being decoded for a while, and their
     * connections count against the per-IP limit until they end: retry */
    long st = 0;
    double until = tu_deadline(30, 4);
    while ((st = post(c, d.port, "/v1/models/gan/sample", "{\"n\":2,\"seed\":5}", &out)) != 200 &&
           tu_now() < until)
        tu_msleep(50);
    ck_assert_msg(st == 200, "status %ld after the resets; log tail:\n%s", st, tu_log_tail(&d));
    ck_assert_ptr_nonnull(strstr(out.data, "\"images\""));
    ld_buf_free(&out);
    curl_easy_cleanup(c);
    char *log = tu_read_text(d.log);
    ck_assert_msg(!strstr(log, "bug:"), "%s", tu_log_tail(&d));
    free(log);
    tu_daemon_stop_ok(&d, 60);
    curl_global_cleanup();
}
END_TEST

/* SIGTERM with no drain time (shutdown_timeout = 0) while decodes are queued
 * with their connections suspended: MHD must not be stopped before they are
 * resumed (it aborts on a suspended connection), so the exit is still 0. */
static void *burst_client(void *p)
{
    raw_client_t *bt = p;
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = raw_gan_sample(bt->port, "{\"n\":256,\"seed\":4,\"format\":\"png\"}");
        if (fds[i] >= 0)
            atomic_fetch_add(bt->sent, 1);
    }
    tu_msleep(3000); /* keep the connections open through the shutdown */
    for (int i = 0; i < 4; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return NULL;
}

START_TEST(test_daemon_sigterm_with_queued_decodes)
{
    tu_daemon_t d;
    daemon_start(&d, 4, "shutdown_timeout = 0\n");
    enum { CLIENTS = 8 };
    atomic_int sent = 0;
    raw_client_t bt[CLIENTS];
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        bt[i] = (raw_client_t){.port = d.port, .iters = 4, .sent = &sent};
        ck_assert_int_eq(pthread_create(&t[i], NULL, burst_client, &bt[i]), 0);
    }
    while (atomic_load(&sent) < CLIENTS * 4)
        tu_msleep(1);
    tu_msleep(20); /* the requests reach the daemon and queue */
    tu_daemon_stop_ok(&d, 60);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(t[i], NULL);
}
END_TEST

/* Each HTTP thread has its own MHD daemon, fed by one acceptor; the per-IP
 * limit still counts the connections of all of them. */
START_TEST(test_per_ip_limit_across_threads)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_t d;
    daemon_start(&d, 4, "per_ip_connection_limit = 3\n");
    int fds[8], open_n = 0;
    for (int i = 0; i < 8; i++) {
        fds[i] = open_counted(d.port);
        open_n += fds[i] >= 0;
    }
    ck_assert_msg(open_n == 3, "%d connections from one address kept, limit 3", open_n);
    /* closing one makes room for one more */
    for (int i = 0; i < 8; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
            break;
        }
    int again = -1;
    for (int tries = 0; tries < 100 && again < 0; tries++) { /* until the close is seen */
        again = open_counted(d.port);
        if (again < 0)
            tu_msleep(20);
    }
    ck_assert_int_ge(again, 0);
    ck_assert_int_lt(open_counted(d.port), 0);
    close(again);
    for (int i = 0; i < 8; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    tu_daemon_stop_ok(&d, 60);
    curl_global_cleanup();
}
END_TEST

/* The acceptor hands each connection to the HTTP thread with the fewest:
 * 12 keep-alive connections and the /metrics one over 4 threads are 4, 3,
 * 3, 3 (address hashing, as with SO_REUSEPORT, gives 0..7 each). */
START_TEST(test_connections_spread_evenly)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_t d;
    daemon_start(&d, 4, NULL);
    enum { N = 12 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = open_counted(d.port);
        ck_assert_int_ge(fds[i], 0);
    }
    CURL *c = curl_easy_init();
    ld_buf_t body = {0};
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", d.port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
    ld_buf_putc(&body, '\0');
    int lo = 1 << 30, hi = -1, sum = 0;
    for (int t = 0; t < 4; t++) {
        char key[96];
        snprintf(key, sizeof key, "\nlatentd_http_thread_connections{thread=\"%d\"} ", t);
        const char *p = strstr(body.data, key);
        ck_assert_msg(p, "no %s in\n%s", key + 1, body.data);
        int n = atoi(p + strlen(key));
        lo = n < lo ? n : lo;
        hi = n > hi ? n : hi;
        sum += n;
    }
    ck_assert_msg(sum == N + 1 && hi - lo <= 1, "connections per thread %d..%d, %d in all:\n%s", lo,
                  hi, sum, body.data);
    ld_buf_free(&body);
    curl_easy_cleanup(c);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    tu_daemon_stop_ok(&d, 60);
    curl_global_cleanup();
}
END_TEST

Suite *suite_batch(void)
{
    Suite *s = suite_create("batch");
    TCase *k = tcase_create("kernel");
    tcase_set_timeout(k, 120);
    tcase_add_test(k, test_rows_independent_of_batch);
    tcase_add_test(k, test_bad_arguments);
    tcase_add_test(k, test_layer_model_falls_back);
    suite_add_tcase(s, k);
    TCase *b = tcase_create("batcher");
    tcase_set_timeout(b, 300);
    tcase_add_test(b, test_concurrent_callers_share_passes);
    tcase_add_test(b, test_async_submit);
    tcase_add_loop_test(b, test_capped_passes, 0, 2);
    tcase_add_test(b, test_free_waits_for_running_pass);
    tcase_add_test(b, test_leader_hands_off_queue);
    tcase_add_test(b, test_leader_stops_once_its_request_is_taken);
    tcase_add_test(b, test_leader_leads_one_pass_beside_another);
    tcase_add_test(b, test_lone_leader_leaves_queue_to_drainer);
    tcase_add_test(b, test_second_pass_rows);
    suite_add_tcase(s, b);
    TCase *p = tcase_create("png");
    tcase_set_timeout(p, 120);
    tcase_add_test(p, test_png_grids_roundtrip_threads);
    suite_add_tcase(s, p);
    TCase *d = tcase_create("daemon");
    tcase_set_timeout(d, 300);
    tcase_add_test(d, test_daemon_same_bytes_under_load);
    tcase_add_test(d, test_daemon_interpolate_shares_passes);
    tcase_add_test(d, test_daemon_clients_gone_while_queued);
    tcase_add_test(d, test_daemon_sigterm_with_queued_decodes);
    tcase_add_test(d, test_per_ip_limit_across_threads);
    tcase_add_test(d, test_connections_spread_evenly);
    suite_add_tcase(s, d);
    return s;
}
