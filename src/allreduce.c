/* allreduce.c — an in-process allreduce over threads, then over MPI ranks.
 * See allreduce.h.
 *
 * Two barriers per call: after the first every thread's buffer is published
 * and thread 0 sums all of them in thread order into the result, then sums
 * that across ranks (dist.h: rank order, and thread 0 is the trainer's worker
 * 0, the thread MPI was initialised on); after the second every thread copies
 * the result back.  Thread 0 writes the result again only after the next
 * call's first barrier, which no thread passes before it has copied it. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/allreduce.h"
#include "latentd/common.h"
#include "latentd/dist.h"

#include <pthread.h>
#include <string.h>

struct ld_allreduce {
    int n;
    size_t max_n;
    pthread_barrier_t bar;
    double **src;    /* (n) each rank's buffer during a call */
    double *res;     /* (max_n) the sum */
};

int ld_allreduce_new(int n_ranks, size_t max_n, ld_allreduce_t **out)
{
    LD_ASSERT(n_ranks >= 1 && max_n >= 1);
    ld_allreduce_t *ar = calloc(1, sizeof *ar);
    if (!ar)
        return LD_ENOMEM;
    ar->n = n_ranks;
    ar->max_n = max_n;
    ar->src = ld_calloc((size_t)n_ranks, sizeof *ar->src);
    ar->res = ld_malloc_array(max_n, sizeof *ar->res);
    if (!ar->src || !ar->res || pthread_barrier_init(&ar->bar, NULL, (unsigned)n_ranks) != 0) {
        free(ar->src);
        free(ar->res);
        free(ar);
        return LD_ENOMEM;
    }
    *out = ar;
    return LD_OK;
}

void ld_allreduce_free(ld_allreduce_t *ar)
{
    if (!ar)
        return;
    pthread_barrier_destroy(&ar->bar);
    free(ar->src);
    free(ar->res);
    free(ar);
}

int ld_allreduce_ranks(const ld_allreduce_t *ar) { return ar->n; }

void ld_allreduce_sum(ld_allreduce_t *ar, int rank, double *buf, size_t n)
{
    LD_ASSERT(rank >= 0 && rank < ar->n && n <= ar->max_n);
    if (ar->n == 1) {
        ld_dist_allreduce_sum_d(buf, n);
        return;
    }
    ar->src[rank] = buf;
    pthread_barrier_wait(&ar->bar);
    if (rank == 0) {
        double *res = ar->res;
        memcpy(res, ar->src[0], n * sizeof *res);
        for (int r = 1; r < ar->n; r++) {
            const double *s = ar->src[r];
            for (size_t i = 0; i < n; i++)
                res[i] += s[i];
        }
        ld_dist_allreduce_sum_d(res, n);
    }
    pthread_barrier_wait(&ar->bar);
    memcpy(buf, ar->res, n * sizeof *buf);
}
