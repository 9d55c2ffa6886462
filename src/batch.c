/* batch.c — see include/latentd/batch.h.
 *
 * Packed layout.  Layer i (in -> out) is stored as panels of PANEL output
 * columns (the last one narrower, padded with zero columns to a multiple of
 * 16): panel p holds w[k][c] for k = 0..in-1 and its columns, k-major, so a
 * pass over the panel is one sequential read and each k brings one cache line
 * per 16 columns.  Biases are padded to out_pad = out rounded up to 16; the
 * padding columns compute zeros that the next layer never reads (it reads
 * exactly `in` values of each row).
 *
 * Micro-kernel.  R rows x V vectors of outputs live in registers: start from
 * the bias, then for k = 0..in-1 one fused multiply-add of x[r][k] with the
 * panel's row k.  Each output is therefore bias + x0 w0 + x1 w1 + ... rounded
 * after every step in the same order for any R, V or instruction set, and
 * scalar fmaf gives the same bits as the vector FMAs.  With AVX-512, up to 6
 * rows x 4 vectors: a pass of up to 6 rows reads each weight once (3 x 8 over
 * 128-column panels would read them twice for 4-6 rows).
 *
 * Batcher (see batch.h).  Under mu: the queue, the free scratch slots
 * (a bit mask), the number of passes running, the drainer's flags, the
 * counters.  A request queues itself; if a slot is free its caller takes it
 * and leads: takes a batch, drops mu, decodes into the slot's scratch,
 * completes each request (a callback for a submitted one, a store and a
 * futex wake for a caller asleep in ld_batch_decode), and repeats until the
 * queue is empty or it may stop (lead_locked: its own request taken by a
 * pass, its own or another's, or one pass led beside another).  Then, with
 * requests still queued, it leaves them to another running pass, or, if it
 * was the only one, to the drainer thread.  The taking is recorded under mu
 * in a flag on the leader's stack (job.taken), and the leader leaves under
 * mu, so the last pass running either empties the queue or wakes the
 * drainer, and a request queued while every slot is busy is always taken.
 * Without the drainer a leader whose request another pass took led on for
 * as long as new requests kept the queue non-empty: seconds under load,
 * with every connection of its HTTP thread waiting.
 */
#define _GNU_SOURCE
#include "latentd/batch.h"

#include "latentd/log.h"
#include "latentd/mlp.h"
#include "latentd/nn.h"

#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#define PANEL 64 /* output columns per panel: 4 AVX-512 vectors */
#define RMAX 6   /* rows per AVX-512 micro-kernel: 6 x 4 accumulators */
#define ALIGN 64
/* Rows queued behind a running pass that start another one beside it when
 * the packed weights do not fit in a core's L2 cache: a pass of fewer rows
 * would stream them from L3 or memory for too few rows.  Weights that fit
 * are read from the core's own L2, and a one-row pass beside the running
 * one costs less than queueing behind it (for an HTTP request, a suspend
 * and a resume of its connection); such a batcher starts a second pass for
 * one row. */
#define SECOND_PASS_ROWS 8

typedef struct {
    int in, out, out_pad;
    ld_act_t act;           /* after this layer */
    const float *w;         /* panels, see above */
    const float *b;         /* (out_pad) */
} layer_t;

/* y (M, ldy) = act-less dense layer of x (M, ldx); M <= LD_BATCH_CHUNK. */
typedef void (*layer_fn)(const layer_t *L, int M, const float *x, size_t ldx, float *y,
                         size_t ldy);

/* A blocking request's state: its owner sleeps on it (a futex) until the
 * thread leading its pass sets DONE. */
enum { JOB_WAIT = 0, JOB_DONE = 1 };

/* A request in the queue: on its caller's stack (ld_batch_decode) or on the
 * heap (ld_batch_submit). */
typedef struct job {
    int n;
    const float *z; /* (n, z_dim) */
    const uint8_t *labels; /* (n) class labels of a conditional model, or NULL */
    float *x;       /* (n, x_dim) */
    int *taken;     /* its caller leads: that caller's flag, set (and this
                       cleared) under mu when a pass takes the job; cleared
                       by the caller if it stops leading first */
    atomic_int state;
    struct job *next;
    /* ld_batch_submit: heap-allocated, done(arg) is called once its rows
     * are written and the job is then freed; NULL: a caller asleep in
     * ld_batch_decode, woken through state */
    ld_batch_done_fn done;
    void *arg;
} job_t;

/* One pass's scratch: taken by the thread leading a pass, for that pass. */
typedef struct {
    float *gather;          /* (CHUNK, z_dim) */
    float *s0, *s1;         /* (CHUNK, widest out_pad) */
    float *dest[LD_BATCH_CHUNK];
} scratch_t;

struct ld_batch {
    /* read-only after ld_batch_new */
    int z_dim, x_dim, n_layers, max_rows;
    int second_pass_rows;   /* queued rows that start a pass beside a running one */
    float slope;
    ld_act_t final_act;     /* applied after the last layer's own activation */
    layer_t layers[LD_MAX_LAYERS];
    layer_fn fn;
    const char *kernel;
    float *wmem;            /* packed weights and biases, one allocation */
    const ld_model_t *model; /* a layer-list model (not dense): decoded by ld_model_decode
                                instead of the packed kernel; borrowed, outlives b */
    float *smem;            /* every scratch_t's buffers, one allocation */
    scratch_t *scratch;     /* (max_passes): scratch[i] belongs to whoever took slot i */

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t idle;    /* ld_batch_free waits here for running, drain, starting: 0 */
    pthread_cond_t kick;    /* the drainer waits here for drain (and a free slot) */
    job_t *head, *tail;
    uint64_t free_slots;    /* bit i: scratch[i] is free */
    int running;            /* passes being led (slots taken) */
    int drain;              /* the queue was left to the drainer, not yet taken up */
    int stop;               /* ld_batch_free: the drainer returns */
    int starting;           /* a caller is starting the drainer */
    int has_drainer;        /* drainer runs */
    pthread_t drainer;
    long queued_rows;       /* rows in the queue */
    ld_batch_stats_t st;
};

/* ------------------------------------------------------------------ kernels */

static int panel_width(const layer_t *L, int c0)
{
    return L->out_pad - c0 < PANEL ? L->out_pad - c0 : PANEL;
}

/* Portable reference: the same order of fused operations, one value at a time. */
static void layer_scalar(const layer_t *L, int M, const float *x, size_t ldx, float *y,
                         size_t ldy)
{
    const float *pw = L->w;
    for (int c0 = 0; c0 < L->out_pad; c0 += PANEL) {
        int w = panel_width(L, c0);
        for (int r = 0; r < M; r++) {
            const float *xr = x + (size_t)r * ldx;
            float *yr = y + (size_t)r * ldy + c0;
            for (int j = 0; j < w; j++) {
                float acc = L->b[c0 + j];
                for (int k = 0; k < L->in; k++)
                    acc = fmaf(xr[k], pw[(size_t)k * (size_t)w + (size_t)j], acc);
                yr[j] = acc;
            }
        }
        pw += (size_t)L->in * (size_t)w;
    }
}

#if HAVE_X86
/* R rows x V vectors of 16 columns of one panel (width 16 V). Inlined with
 * constant R and V so that the accumulators stay in registers. */
static inline __attribute__((always_inline, target("avx512f"))) void
mk_avx512(const int R, const int V, int K, const float *pw, const float *bias, const float *x,
          size_t ldx, float *y, size_t ldy)
{
    __m512 acc[RMAX][4];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm512_loadu_ps(bias + 16 * v);
    for (int k = 0; k < K; k++, pw += 16 * V) {
        __m512 w[4];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            w[v] = _mm512_load_ps(pw + 16 * v);
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + (size_t)k]);
#pragma GCC unroll 4
            for (int v = 0; v < V; v++)
                acc[r][v] = _mm512_fmadd_ps(xb, w[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
            _mm512_storeu_ps(y + (size_t)r * ldy + 16 * v, acc[r][v]);
}

#define MK512(R, V)                                                                    \
    case (R) * 16 + (V):                                                               \
        mk_avx512(R, V, L->in, pw, L->b + c0, xr, ldx, yr, ldy);                       \
        break;
#define MK512_V(V) MK512(1, V) MK512(2, V) MK512(3, V) MK512(4, V) MK512(5, V) MK512(6, V)

__attribute__((target("avx512f"))) static void
layer_avx512(const layer_t *L, int M, const float *x, size_t ldx, float *y, size_t ldy)
{
    const float *pw = L->w;
    for (int c0 = 0; c0 < L->out_pad; c0 += PANEL) {
        int w = panel_width(L, c0);
        /* ceil(M / RMAX) row groups of near-equal size (19 rows: 5+5+5+4,
         * not 6+6+6+1, whose one-row group is bound by loads, not FMAs) */
        int groups = (M + RMAX - 1) / RMAX;
        for (int g = 0, r0 = 0; g < groups; g++) {
            int R = (M - r0) / (groups - g);
            const float *xr = x + (size_t)r0 * ldx;
            float *yr = y + (size_t)r0 * ldy + c0;
            switch (R * 16 + w / 16) {
                MK512_V(1) MK512_V(2) MK512_V(3) MK512_V(4)
            default:
                LD_ASSERT(!"panel shape");
            }
            r0 += R;
        }
        pw += (size_t)L->in * (size_t)w;
    }
}

/* AVX2: R rows x V vectors of 8 columns, a slice of 8 V columns of a panel
 * whose rows are `stride` floats apart. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
mk_avx2(const int R, const int V, int K, const float *pw, size_t stride, const float *bias,
        const float *x, size_t ldx, float *y, size_t ldy)
{
    __m256 acc[RMAX][8];
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int v = 0; v < V; v++)
            acc[r][v] = _mm256_loadu_ps(bias + 8 * v);
    for (int k = 0; k < K; k++, pw += stride) {
#pragma GCC unroll 6
        for (int r = 0; r < R; r++) {
            __m256 xb = _mm256_set1_ps(x[(size_t)r * ldx + (size_t)k]);
#pragma GCC unroll 8
            for (int v = 0; v < V; v++)
                acc[r][v] = _mm256_fmadd_ps(xb, _mm256_load_ps(pw + 8 * v), acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int v = 0; v < V; v++)
            _mm256_storeu_ps(y + (size_t)r * ldy + 8 * v, acc[r][v]);
}

#define MK2(R, V)                                                                      \
    case (R) * 16 + (V):                                                               \
        mk_avx2(R, V, L->in, pw + s, (size_t)w, bs, xr, ldx, yr, ldy);                 \
        break;

/* Row groups as layer_avx512's.  Twelve accumulators keep the two FMA
 * units busy through the FMA latency: a group of 3-6 rows takes 16-column
 * slices (one cache line of each panel row for all of its rows), 2 rows
 * 32 columns, a lone row the whole panel. */
__attribute__((target("avx2,fma"))) static void
layer_avx2(const layer_t *L, int M, const float *x, size_t ldx, float *y, size_t ldy)
{
    const float *pw = L->w;
    for (int c0 = 0; c0 < L->out_pad; c0 += PANEL) {
        int w = panel_width(L, c0);
        int groups = (M + RMAX - 1) / RMAX;
        for (int g = 0, r0 = 0; g < groups; g++) {
            int R = (M - r0) / (groups - g);
            const float *xr = x + (size_t)r0 * ldx;
            int step = R == 1 ? w : R == 2 ? 32 : 16;
            for (int s = 0; s < w; s += step) {
                int V = (w - s < step ? w - s : step) / 8; /* 2, 4, 6 or 8 */
                float *yr = y + (size_t)r0 * ldy + c0 + s;
                const float *bs = L->b + c0 + s;
                switch (R * 16 + V) {
                    MK2(1, 2) MK2(1, 4) MK2(1, 6) MK2(1, 8) MK2(2, 2) MK2(2, 4)
                    MK2(3, 2) MK2(4, 2) MK2(5, 2) MK2(6, 2)
                default:
                    LD_ASSERT(!"panel shape");
                }
            }
            r0 += R;
        }
        pw += (size_t)L->in * (size_t)w;
    }
}
#endif

static int pick_kernel(const char *want, layer_fn *fn, const char **name, ld_err_t *err)
{
#if HAVE_X86
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f");
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    int avx512 = 0, avx2 = 0;
#endif
    if (!want)
        want = avx512 ? "avx512" : avx2 ? "avx2" : "scalar";
    if (strcmp(want, "scalar") == 0) {
        *fn = layer_scalar;
#if HAVE_X86
    } else if (strcmp(want, "avx512") == 0 && avx512) {
        *fn = layer_avx512;
    } else if (strcmp(want, "avx2") == 0 && avx2) {
        *fn = layer_avx2;
#endif
    } else {
        return ld_err_set(err, LD_EUNSUPPORTED, "decoder kernel '%s' is not available on this CPU",
                          want);
    }
    *name = strcmp(want, "avx512") == 0 ? "avx512" : strcmp(want, "avx2") == 0 ? "avx2" : "scalar";
    return LD_OK;
}

/* ------------------------------------------------------------------ forward */

/* Decode the first M (<= CHUNK) rows of sc->gather into sc->dest[0..M-1]. */
static void forward(const ld_batch_t *b, scratch_t *sc, int M)
{
    const float *x = sc->gather;
    size_t ldx = (size_t)b->z_dim;
    for (int i = 0; i < b->n_layers; i++) {
        const layer_t *L = &b->layers[i];
        float *y = (i & 1) ? sc->s1 : sc->s0;
        size_t ldy = (size_t)L->out_pad;
        b->fn(L, M, x, ldx, y, ldy);
        /* row by row: the same call on the same values whatever M is */
        for (int r = 0; r < M; r++)
            ld_act_forward(L->act, b->slope, (size_t)L->out, y + (size_t)r * ldy,
                           y + (size_t)r * ldy);
        x = y;
        ldx = ldy;
    }
    for (int r = 0; r < M; r++) {
        ld_act_forward(b->final_act, 0.0f, (size_t)b->x_dim, x + (size_t)r * ldx, sc->dest[r]);
    }
}

/* Decode every row of the jobs linked from first, CHUNK rows per pass. */
static void run_jobs(const ld_batch_t *b, scratch_t *sc, job_t *first)
{
    int m = 0;
    size_t zd = (size_t)b->z_dim, xd = (size_t)b->x_dim;
    for (job_t *j = first; b->model && j; j = j->next)
        if (ld_model_decode_labels(b->model, j->n, j->z, j->labels, j->x, NULL)) /* no image */
            memset(j->x, 0, (size_t)j->n * xd * sizeof(float));
    for (job_t *j = first; !b->model && j; j = j->next) {
        for (int r = 0; r < j->n; r++) {
            memcpy(sc->gather + (size_t)m * zd, j->z + (size_t)r * zd, zd * sizeof(float));
            sc->dest[m] = j->x + (size_t)r * xd;
            if (++m == LD_BATCH_CHUNK) {
                forward(b, sc, m);
                m = 0;
            }
        }
    }
    if (m)
        forward(b, sc, m);
}

/* ------------------------------------------------------------------ batcher */

/* Pop the next batch off the queue: the head, then more requests while the
 * total stays within max_rows.  mu held, queue not empty. */
static job_t *take_locked(ld_batch_t *b, int *n_jobs, int *n_rows)
{
    job_t *first = b->head, *last = first;
    int rows = first->n, jobs = 1;
    while (last->next && rows + last->next->n <= b->max_rows) {
        last = last->next;
        rows += last->n;
        jobs++;
    }
    b->head = last->next;
    if (!b->head)
        b->tail = NULL;
    b->queued_rows -= rows;
    last->next = NULL;
    for (job_t *j = first; j; j = j->next)
        if (j->taken) { /* its caller is leading: it may stop now */
            *j->taken = 1;
            j->taken = NULL;
        }
    *n_jobs = jobs;
    *n_rows = rows;
    return first;
}

/* Sleep while *state == JOB_WAIT.  Spurious wake-ups (including stray ones
 * aimed at a job that lived here before) just loop. */
static void job_wait(job_t *j)
{
    while (atomic_load_explicit(&j->state, memory_order_acquire) == JOB_WAIT)
        syscall(SYS_futex, &j->state, FUTEX_WAIT_PRIVATE, JOB_WAIT, NULL, NULL, 0);
}

/* Mark j done and wake its owner.  Once the store is visible the owner may
 * return and its stack be reused: the wake then hits whatever lives at that
 * address, which is harmless (see job_wait); j itself is not touched again. */
static void job_finish(job_t *j)
{
    atomic_store_explicit(&j->state, JOB_DONE, memory_order_release);
    syscall(SYS_futex, &j->state, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* Run passes with scratch sc (mu held, sc taken by this thread) until the
 * queue is empty, or until the caller may go back to its own work: its job
 * has been taken by a pass (*own_taken) and another pass runs or
 * LD_BATCH_LONE_PASSES more were led alone; or one pass was led while
 * another runs.  (own_taken is NULL for the drainer, or for a caller
 * standing in for a drainer that could not start: no job, and it empties
 * the queue.)  What is still queued goes to another running pass
 * or, if this is the only one, to the drainer.  Decided under mu with
 * running still counting this pass, so of two leaders that stop at once
 * the second sees itself alone.  A leader leaves with own->taken cleared
 * (by the take, or here), so no pass writes to its flag once it is gone.
 * Returns with mu held.  Every job taken is completed: a callback for a
 * submitted one, a wake for a caller asleep in ld_batch_decode, a store for
 * the caller's own (this thread, not asleep). */
static void lead_locked(ld_batch_t *b, scratch_t *sc, job_t *own, const int *own_taken)
{
    int after = 0; /* passes led since own was taken */
    for (int led = 0; b->head; led = 1) {
        int alone = b->running == 1;
        if (own_taken &&
            (*own_taken ? !alone || after++ >= LD_BATCH_LONE_PASSES : led && !alone)) {
            if (!*own_taken)
                own->taken = NULL; /* still queued: its flag leaves with us */
            b->st.handed_off++;
            if (alone) {
                b->drain = 1;
                pthread_cond_signal(&b->kick);
            }
            break;
        }
        int jobs, rows;
        job_t *batch = take_locked(b, &jobs, &rows);
        /* counted before any of its requests completes: a caller that
         * reads the counters after its request sees its pass */
        b->st.batches++;
        b->st.requests += (uint64_t)jobs;
        b->st.rows += (uint64_t)rows;
        b->st.shared += jobs > 1;
        if (jobs > b->st.max_requests)
            b->st.max_requests = jobs;
        pthread_mutex_unlock(&b->mu);
        run_jobs(b, sc, batch);
        for (job_t *j = batch; j;) {
            job_t *next = j->next; /* read before j's owner may return */
            if (j->done) {
                j->done(j->arg);
                free(j);
            } else if (j == own) {
                atomic_store_explicit(&j->state, JOB_DONE, memory_order_relaxed);
            } else {
                job_finish(j);
            }
            j = next;
        }
        pthread_mutex_lock(&b->mu);
    }
}

static void start_drainer(ld_batch_t *b);

/* Take a free scratch slot for a pass (mu held, a slot free). */
static int slot_take(ld_batch_t *b)
{
    int slot = __builtin_ctzll(b->free_slots);
    b->free_slots &= ~(1ULL << slot);
    if (++b->running > b->st.max_passes)
        b->st.max_passes = b->running;
    return slot;
}

/* Give a slot back (mu held): the drainer may be waiting for one. */
static void slot_give(ld_batch_t *b, int slot)
{
    b->free_slots |= 1ULL << slot;
    if (b->drain && !b->head)
        b->drain = 0; /* emptied meanwhile: nothing left to the drainer */
    if (b->drain)
        pthread_cond_signal(&b->kick);
    if (--b->running == 0)
        pthread_cond_broadcast(&b->idle);
}

/* Queue j; then lead passes on this thread (see lead_locked) if no pass is
 * running, or if fewer than max_passes are and the queue holds
 * second_pass_rows rows (see SECOND_PASS_ROWS).  Otherwise a
 * running leader (or the drainer it leaves the queue to) takes j. */
static void enqueue(ld_batch_t *b, job_t *j)
{
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued_rows += j->n;
    int start = 0;
    if (b->free_slots && (b->running == 0 || b->queued_rows >= b->second_pass_rows)) {
        int taken = 0;
        j->taken = &taken;
        int slot = slot_take(b);
        lead_locked(b, &b->scratch[slot], j, &taken);
        slot_give(b, slot);
        start = b->drain && !b->has_drainer && !b->starting;
        b->starting |= start;
    }
    pthread_mutex_unlock(&b->mu);
    if (start)
        start_drainer(b);
}

/* Take up the queue left to the drainer (mu held, drain set, a slot free if
 * the queue is not empty): lead until it is empty. */
static void drain_locked(ld_batch_t *b)
{
    b->drain = 0;
    if (b->head) {
        int slot = slot_take(b);
        lead_locked(b, &b->scratch[slot], NULL, NULL);
        slot_give(b, slot);
    } else if (!b->running) {
        pthread_cond_broadcast(&b->idle); /* ld_batch_free may wait for drain */
    }
}

/* The drainer: leads the passes a caller's thread left to it (drain) until
 * the queue is empty.  It serves no connection, so nothing waits on it but
 * the queue; it sleeps otherwise.  Ends when ld_batch_free sets stop. */
static void *drainer_main(void *arg)
{
    ld_batch_t *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        if (!b->drain || (b->head && !b->free_slots))
            pthread_cond_wait(&b->kick, &b->mu);
        else
            drain_locked(b);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* Start the drainer, on the first caller that leaves it the queue: so it
 * runs with a serving thread's scheduling, not that of whichever thread
 * created the batcher (a training worker under SCHED_IDLE, for one).  If
 * it cannot be started (out of threads), this caller stands in for it: if
 * a slot is free it leads until the queue is empty, unbounded like the
 * drainer, since stopping early could strand the queue on an idle server;
 * otherwise a running pass leaves the queue again later and its caller
 * tries again. */
static void start_drainer(ld_batch_t *b)
{
    pthread_t t;
    int rc = pthread_create(&t, NULL, drainer_main, b), ok = rc == 0;
    if (!ok)
        ld_log_warn("batch: cannot start the drainer thread (%s); HTTP threads lead instead",
                    strerror(rc));
    pthread_mutex_lock(&b->mu);
    b->starting = 0;
    if (ok) {
        b->drainer = t;
        b->has_drainer = 1;
    } else if (b->drain && (!b->head || b->free_slots)) {
        drain_locked(b);
    }
    if (!b->running)
        pthread_cond_broadcast(&b->idle); /* ld_batch_free waits for starting */
    pthread_mutex_unlock(&b->mu);
}

int ld_batch_decode(ld_batch_t *b, int n, const float *z, float *x, ld_err_t *err)
{
    if (!b || n < 0 || (n > 0 && (!z || !x)))
        return ld_err_set(err, LD_EINVAL, "batch decode: bad arguments (n = %d)", n);
    if (n == 0)
        return LD_OK;
    job_t me = {.n = n, .z = z, .x = x};
    atomic_init(&me.state, JOB_WAIT);
    enqueue(b, &me);
    job_wait(&me); /* returns at once if this thread led the pass */
    return LD_OK;
}

int ld_batch_submit(ld_batch_t *b, int n, const float *z, float *x, ld_batch_done_fn done,
                    void *arg, ld_err_t *err)
{
    return ld_batch_submit_labels(b, n, z, NULL, x, done, arg, err);
}

int ld_batch_submit_labels(ld_batch_t *b, int n, const float *z, const uint8_t *labels, float *x,
                           ld_batch_done_fn done, void *arg, ld_err_t *err)
{
    if (!b || n <= 0 || !done || !z || !x || (labels && !b->model))
        return ld_err_set(err, LD_EINVAL, "batch submit: bad arguments (n = %d)", n);
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    j->n = n;
    j->z = z;
    j->labels = labels;
    j->x = x;
    j->done = done;
    j->arg = arg;
    atomic_init(&j->state, JOB_WAIT);
    enqueue(b, j); /* j belongs to whoever leads its pass now */
    return LD_OK;
}

void ld_batch_stats(ld_batch_t *b, ld_batch_stats_t *st)
{
    pthread_mutex_lock(&b->mu);
    *st = b->st;
    pthread_mutex_unlock(&b->mu);
}

const char *ld_batch_kernel(const ld_batch_t *b)
{
    return b->kernel;
}

/* ------------------------------------------------------------------ setup */

static size_t round16(size_t n)
{
    return (n + 15) / 16 * 16;
}

int ld_batch_new(const ld_model_t *m, const ld_batch_opts_t *o, ld_batch_t **out, ld_err_t *err)
{
    if (m->ops->decode_net < 0)
        return ld_err_set(err, LD_EUNSUPPORTED, "%s has no decoder to batch", m->ops->article);
    const ld_mlp_t *net = &m->nets[m->ops->decode_net];
    ld_act_t final = m->ops->out_act; /* a VAE's decoder outputs Bernoulli logits */
    ld_batch_t *b = calloc(1, sizeof *b);
    if (!b)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->idle, NULL);
    pthread_cond_init(&b->kick, NULL);
    int rc = pick_kernel(o ? o->kernel : NULL, &b->fn, &b->kernel, err);
    if (rc != LD_OK) {
        ld_batch_free(b);
        return rc;
    }
    /* a slot's scratch is touched only when that many passes first run at
     * once, so unused slots cost address space, not resident memory */
    int slots = o && o->max_passes > 0 ? o->max_passes : (int)sysconf(_SC_NPROCESSORS_ONLN);
    slots = slots < 1 ? 1 : slots > LD_BATCH_MAX_PASSES ? LD_BATCH_MAX_PASSES : slots;
    b->free_slots = slots == 64 ? ~0ULL : (1ULL << slots) - 1;
    b->second_pass_rows = o && o->second_pass_rows > 0 ? o->second_pass_rows : SECOND_PASS_ROWS;
    if (m->arch.net != LD_NETS_MLP) { /* not dense: the plain forward, unpacked, no scratch */
        ld_shape_t zs = m->layers[m->ops->decode_net].in;
        b->model = m;
        b->z_dim = zs.c * zs.h * zs.w;
        b->x_dim = ld_net_width(m, m->ops->decode_net);
        b->max_rows = o && o->max_rows > 0 ? o->max_rows : LD_BATCH_MAX_ROWS_DEFAULT;
        if (!(b->scratch = calloc((size_t)slots, sizeof *b->scratch))) {
            ld_batch_free(b);
            return ld_err_set(err, LD_ENOMEM, "out of memory");
        }
        *out = b;
        return LD_OK;
    }
    b->z_dim = net->size[0];
    b->x_dim = net->size[net->n_layers];
    b->n_layers = net->n_layers;
    b->max_rows = o && o->max_rows > 0 ? o->max_rows : LD_BATCH_MAX_ROWS_DEFAULT;
    b->slope = net->slope;
    b->final_act = final;

    size_t wfloats = 0, widest = 0;
    for (int i = 0; i < net->n_layers; i++) {
        size_t op = round16((size_t)net->size[i + 1]);
        wfloats += (size_t)net->size[i] * op + op;
        widest = op > widest ? op : widest;
    }
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE); /* 0 or -1 where unknown */
    if (!(o && o->second_pass_rows > 0) && l2 > 0 && wfloats * sizeof(float) <= (size_t)l2)
        b->second_pass_rows = 1;
    size_t gfloats = (size_t)LD_BATCH_CHUNK * round16((size_t)b->z_dim);
    size_t per_slot = gfloats + 2 * (size_t)LD_BATCH_CHUNK * widest;
    b->wmem = aligned_alloc(ALIGN, wfloats * sizeof(float));
    b->smem = aligned_alloc(ALIGN, (size_t)slots * per_slot * sizeof(float));
    b->scratch = calloc((size_t)slots, sizeof *b->scratch);
    if (!b->wmem || !b->smem || !b->scratch) {
        ld_batch_free(b);
        return ld_err_set(err, LD_ENOMEM, "out of memory for the packed decoder (%zu floats)",
                          wfloats + (size_t)slots * per_slot);
    }
    for (int i = 0; i < slots; i++) {
        scratch_t *sc = &b->scratch[i];
        sc->gather = b->smem + (size_t)i * per_slot;
        sc->s0 = sc->gather + gfloats;
        sc->s1 = sc->s0 + (size_t)LD_BATCH_CHUNK * widest;
    }

    float *p = b->wmem;
    for (int i = 0; i < net->n_layers; i++) {
        layer_t *L = &b->layers[i];
        L->in = net->size[i];
        L->out = net->size[i + 1];
        L->out_pad = (int)round16((size_t)L->out);
        L->act = i + 1 < net->n_layers ? net->act : net->out_act;
        const float *w = m->params + net->w_off[i]; /* (out, in) */
        const float *bias = m->params + net->b_off[i];
        L->w = p;
        for (int c0 = 0; c0 < L->out_pad; c0 += PANEL) {
            int pw = panel_width(L, c0);
            for (int k = 0; k < L->in; k++)
                for (int j = 0; j < pw; j++) {
                    int c = c0 + j;
                    *p++ = c < L->out ? w[(size_t)c * (size_t)L->in + (size_t)k] : 0.0f;
                }
        }
        L->b = p;
        for (int c = 0; c < L->out_pad; c++)
            *p++ = c < L->out ? bias[c] : 0.0f;
    }
    *out = b;
    return LD_OK;
}

void ld_batch_free(ld_batch_t *b)
{
    if (!b)
        return;
    /* calls still leading passes, and the drainer with what they left it
     * (every queued job), finish first; the last one to stop signals idle */
    pthread_mutex_lock(&b->mu);
    while (b->running || b->drain || b->starting)
        pthread_cond_wait(&b->idle, &b->mu);
    b->stop = 1;
    pthread_cond_signal(&b->kick);
    pthread_mutex_unlock(&b->mu);
    if (b->has_drainer)
        pthread_join(b->drainer, NULL);
    pthread_cond_destroy(&b->kick);
    pthread_cond_destroy(&b->idle);
    pthread_mutex_destroy(&b->mu);
    free(b->wmem);
    free(b->smem);
    free(b->scratch);
    free(b);
}
