/* allreduce.h — summing small vectors across the worker threads of one
 * training step, for statistics that must cover the whole batch (batch norm).
 *
 * n_ranks threads each call ld_allreduce_sum with their own rank and a buffer
 * of the same length; each returns when every rank has called it, with the
 * buffer holding the sum over ranks.  The sum is taken in rank order, so every
 * rank gets the same bits, and the same bits on every run.  Calls are matched
 * by order: every rank must make the same sequence of calls (a worker with no
 * rows contributes zeros).  In a process started by mpirun (dist.h) the
 * threads' sum is then summed across processes, in process order, so the
 * buffer holds the sum over every thread of every process: each process must
 * then make the same sequence of calls too, and rank 0 here must be the
 * thread that initialised MPI (the trainer's worker 0).
 *
 * Ownership: the creator owns it and frees it after the threads are done with
 * it.  Thread-safety: one call at a time per rank; ranks run concurrently.
 */
#ifndef LATENTD_ALLREDUCE_H
#define LATENTD_ALLREDUCE_H

#include <stddef.h>

typedef struct ld_allreduce ld_allreduce_t;

/* For n_ranks >= 1 threads and vectors of up to max_n doubles. 0 or LD_ENOMEM. */
int ld_allreduce_new(int n_ranks, size_t max_n, ld_allreduce_t **out);
void ld_allreduce_free(ld_allreduce_t *ar);
int ld_allreduce_ranks(const ld_allreduce_t *ar);
/* buf (n) := sum over ranks of every rank's buf (n).  n <= max_n, the same on
 * every rank.  Blocks until all ranks have called it. */
void ld_allreduce_sum(ld_allreduce_t *ar, int rank, double *buf, size_t n);

#endif
