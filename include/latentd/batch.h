/* batch.h — the daemon's decoder: a row-independent dense kernel and an
 * opportunistic micro-batcher in front of it.
 *
 * Kernel.  ld_batch_new() copies a VAE's decoder (or a GAN's generator) into
 * panels of 64 output columns, laid out so one pass streams each panel once
 * for up to six rows at a time.  Every output value is computed in one fixed
 * order — the bias, then one fused multiply-add per input in index order —
 * whatever the number of rows in the pass, the row's position in it, or the
 * instruction set (AVX-512, AVX2+FMA, or scalar fmaf on CPUs without FMA,
 * which is slow but gives the same bits).  So a row decodes to the same bytes
 * alone or inside any batch: responses for a seed do not depend on what else
 * the server was doing.  The values agree with ld_model_decode (OpenBLAS)
 * to float rounding (about 1e-6), not bit for bit: OpenBLAS itself changes
 * its summation order with the number of rows.
 *
 * Batching.  A batcher has one queue, and passes run on the callers' threads,
 * at most max_passes at once (one per CPU by default), each with scratch of
 * its own; its one thread, the drainer, sleeps unless a caller leaves it the
 * queue (below), and is started by the first caller that does, so it has a
 * serving thread's scheduling.  A request joins the queue; its caller leads
 * if no pass is running, or if fewer than max_passes are and the queue holds
 * second_pass_rows rows (see batch.c): 8, a pass that reads the weights once
 * for several of them, or 1 where they fit in L2.  A leader takes the
 * requests queued so far (whole, up to max_rows rows in total, or one larger
 * request alone), decodes them in one pass, completes each, and goes on until
 * the queue is empty or its own request has been taken into a pass (its own
 * or another's) and either another pass runs or it has led
 * LD_BATCH_LONE_PASSES more; while another pass runs it leads one pass at
 * most.  What is still queued then goes to another running pass or, if none
 * runs, to the drainer, which leads until the queue is empty.  So a caller's
 * thread leads at most the passes queued ahead of its request and
 * LD_BATCH_LONE_PASSES more, however many requests keep arriving (an HTTP
 * thread's other connections wait while it leads).  Otherwise the caller goes
 * on at once (submit) or sleeps (decode) and a running pass takes its
 * request.  Nobody waits for a batch to fill: a lone request is decoded at
 * once on its caller's thread; requests arriving while a pass runs share the
 * next one. What goes into a pass and who leads it depend only on the queue
 * and the passes running, never on the callers' state (the HTTP server's
 * load, for instance).  A pass runs with its leader's scheduling, so callers
 * should be serving threads, not SCHED_IDLE training workers.
 *
 * Thread-safety: every function but _new and _free may be called from any
 * number of threads at once.  One lock per batcher (mu) guards the queue,
 * the free scratch slots and the counters; it is held to queue and to take
 * a batch, never while decoding.  A slot's scratch belongs to the thread
 * that took the slot until its passes are done, so a pass needs no lock.  A
 * blocking caller that does not lead sleeps on a futex of its own and is
 * woken without the lock.
 */
#ifndef LATENTD_BATCH_H
#define LATENTD_BATCH_H

#include "latentd/common.h"
#include "latentd/model.h"

#include <stdint.h>

typedef struct ld_batch ld_batch_t;

/* Rows decoded in one pass of the kernel (the scratch is sized for this). */
#define LD_BATCH_CHUNK 48
/* Default cap on the rows of several requests gathered into one batch. */
#define LD_BATCH_MAX_ROWS_DEFAULT 64
/* Most passes one batcher runs at once (its scratch slots). */
#define LD_BATCH_MAX_PASSES 64
/* Passes the only leader leads after its own request was taken, before it
 * leaves the rest to the drainer: what it finds then is mostly a request
 * or two, cheaper to decode than to wake a thread for; a bound, so that
 * requests arriving meanwhile do not keep its thread. */
#define LD_BATCH_LONE_PASSES 2

typedef struct {
    uint64_t batches;      /* passes run (a request larger than the cap is one batch) */
    uint64_t requests;     /* requests served (ld_batch_decode and ld_batch_submit) */
    uint64_t rows;         /* rows decoded */
    uint64_t shared;       /* batches that served two or more requests */
    int max_requests;      /* most requests served by one batch */
    int max_passes;        /* most passes that were running at once */
    uint64_t handed_off;   /* callers that stopped leading with requests queued,
                              left to another running pass or the drainer */
} ld_batch_stats_t;

typedef struct {
    int max_rows;        /* cap on the rows gathered from several requests; <= 0: default */
    int max_passes;      /* passes at once; <= 0: one per online CPU; capped at LD_BATCH_MAX_PASSES */
    const char *kernel;  /* NULL: the best the CPU has; "avx512", "avx2" or "scalar" (tests) */
    int second_pass_rows; /* queued rows that start a pass beside a running one; <= 0: 1 if
                             the packed weights fit in L2, else 8 (see batch.c) */
} ld_batch_opts_t;

/* A batcher for m's decoder (VAE) or generator (GAN); m's weights are
 * copied, m is not kept.  o may be NULL (defaults).  *out owned by the
 * caller (ld_batch_free).  Errors: LD_EUNSUPPORTED for a classifier or a
 * kernel the CPU lacks, LD_ENOMEM. */
int ld_batch_new(const ld_model_t *m, const ld_batch_opts_t *o, ld_batch_t **out,
                 ld_err_t *err);
/* Free b, after waiting for the calls that are leading passes on it (and
 * so for every queued request).  No new call may start once this is
 * called.  NULL is fine. */
void ld_batch_free(ld_batch_t *b);

/* z (n, z_dim) -> x (n, x_dim), with the output activation applied (images
 * in [0,1]), exactly as ld_model_decode up to float rounding.  Queues the
 * rows and may lead passes (see above), then sleeps until a pass (its own,
 * another caller's or the drainer's) has written them, if none has yet.
 * z and x are the caller's and are only touched before this returns.
 * Errors: LD_EINVAL (n < 0 or NULL pointers with n > 0). */
int ld_batch_decode(ld_batch_t *b, int n, const float *z, float *x, ld_err_t *err);

/* Called once when a submitted request's rows are written, on the thread
 * that led the pass (the submitter's own, another caller's or the
 * drainer); it must be quick and must not call into the batcher. */
typedef void (*ld_batch_done_fn)(void *arg);

/* The asynchronous form of ld_batch_decode, for callers that have other work
 * (an HTTP thread with more connections): queues the n >= 1 rows and may
 * lead passes as ld_batch_decode does (a request to an idle batcher is
 * decoded, and done(arg) called, before this returns), then returns
 * without waiting: if its rows are not written yet, a running pass (or the
 * drainer) writes x and calls done(arg) later, on its thread.  z and
 * x must stay valid until done.  Errors (nothing queued, done not called):
 * LD_EINVAL, LD_ENOMEM. */
int ld_batch_submit(ld_batch_t *b, int n, const float *z, float *x, ld_batch_done_fn done,
                    void *arg, ld_err_t *err);
/* The same with a class label per row for a conditional model (cgan, cvae;
 * layer lists, decoded by ld_model_decode_labels): labels (n) must stay
 * valid until done; each row keeps its own label in a shared pass.  The
 * caller checks the labels (ld_model_decode_labels' rules); a row it did
 * not check comes out as zeros. */
int ld_batch_submit_labels(ld_batch_t *b, int n, const float *z, const uint8_t *labels, float *x,
                           ld_batch_done_fn done, void *arg, ld_err_t *err);

/* Counters since ld_batch_new (a consistent snapshot). */
void ld_batch_stats(ld_batch_t *b, ld_batch_stats_t *st);

/* Name of the kernel in use: "avx512", "avx2" or "scalar". */
const char *ld_batch_kernel(const ld_batch_t *b);

#endif
