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
 * Batching.  A request's rows join a queue.  If no pass is running, the caller
 * becomes the leader: it takes the queued requests (whole, up to max_rows rows
 * in total, or one larger request alone), decodes them in one pass, hands each
 * request its rows and wakes it; then, if more requests queued meanwhile, it
 * wakes the oldest of them to lead the next pass and returns.  Nobody waits
 * for a batch to fill: a lone request starts at once; requests arriving while
 * a pass runs share the next one.  This turns concurrent one-row requests
 * (GEMVs, bound by reading the weights) into a few-row pass (the weights are
 * read once), which is where a GAN's throughput comes from.
 *
 * Asynchronous requests (ld_batch_submit) queue the same way but do not wait:
 * a pass completes them through a callback.  When the lead is to pass to one
 * of them, the batcher's own decoder thread (started on first need) takes it
 * and leads until the queue is empty.  So an HTTP thread never sleeps while
 * its other connections have requests to read, and a pass can gather the
 * requests of every connection, not one per HTTP thread.  Under load (the
 * caller says other requests are in flight) the decoder thread also starts
 * the passes of an idle batcher: an HTTP thread then never decodes at all,
 * and passes hold about twice the rows (18 against 10 for a GAN at 64
 * connections) instead of a one-row pass in front of every few.
 *
 * Thread-safety: every function but _new and _free may be called from any
 * number of threads at once; _free joins the decoder thread and needs every
 * request finished.  One lock per batcher (mu), held only to queue, to take
 * a batch and to pass the lead on; never while decoding.  A waiting request
 * sleeps on a futex of its own and is woken without the lock.
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

typedef struct {
    uint64_t batches;      /* passes run (a request larger than the cap is one batch) */
    uint64_t requests;     /* ld_batch_decode calls served */
    uint64_t rows;         /* rows decoded */
    uint64_t shared;       /* batches that served two or more requests */
    int max_requests;      /* most requests served by one batch */
} ld_batch_stats_t;

typedef struct {
    int max_rows;        /* cap on the rows gathered from several requests; <= 0: default */
    const char *kernel;  /* NULL: the best the CPU has; "avx512", "avx2" or "scalar" (tests) */
} ld_batch_opts_t;

/* A batcher for m's decoder (VAE) or generator (GAN); m's weights are copied,
 * m is not kept.  o may be NULL (defaults).  *out owned by the caller
 * (ld_batch_free).  Errors: LD_EUNSUPPORTED for a classifier or a kernel the
 * CPU lacks, LD_ENOMEM. */
int ld_batch_new(const ld_model_t *m, const ld_batch_opts_t *o, ld_batch_t **out,
                 ld_err_t *err);
/* Free b; no call may be running on it.  NULL is fine. */
void ld_batch_free(ld_batch_t *b);

/* z (n, z_dim) -> x (n, x_dim), with the output activation applied (images
 * in [0,1]), exactly as ld_model_decode up to float rounding.  Blocks until
 * the rows are decoded, possibly by another thread's pass.  z and x are the
 * caller's and are only touched before this returns.  Errors: LD_EINVAL
 * (n < 0 or NULL pointers with n > 0). */
int ld_batch_decode(ld_batch_t *b, int n, const float *z, float *x, ld_err_t *err);

/* Called once when an asynchronous request's rows are written, on the thread
 * that ran the pass (another request's thread or the decoder thread); it
 * must be quick and must not call into the batcher. */
typedef void (*ld_batch_done_fn)(void *arg);

/* The asynchronous form of ld_batch_decode, for callers that have other work
 * (an HTTP thread with more connections).  If no pass is running and others
 * is 0, the rows are decoded at once on this thread and *queued = 0 (done is
 * not called).  Otherwise the request joins the queue, *queued = 1 and this
 * returns at once: a later pass (led by a waiting caller or by the batcher's
 * decoder thread) writes x and calls done(arg), possibly before this returns.
 * others: requests the caller knows to be in flight besides this one (an
 * HTTP server's count); when > 0 an idle batcher leaves the pass to its
 * decoder thread too, so that they can join the pass rather than wait behind
 * a one-row one, and the caller's thread is free to read them.  z and x must
 * stay valid until done.  Errors (nothing queued): LD_EINVAL, LD_ENOMEM. */
int ld_batch_submit(ld_batch_t *b, int n, const float *z, float *x, int others,
                    ld_batch_done_fn done, void *arg, int *queued, ld_err_t *err);

/* Counters since ld_batch_new (a consistent snapshot). */
void ld_batch_stats(ld_batch_t *b, ld_batch_stats_t *st);

/* Name of the kernel in use: "avx512", "avx2" or "scalar". */
const char *ld_batch_kernel(const ld_batch_t *b);

#endif
