/* dist.h — data-parallel training across processes (MPI ranks).
 *
 * `mpirun -np K build/latentd-mpi train ...` runs K copies of the one training
 * loop (train.h).  Every rank holds all parameters, draws the same shuffled
 * order and noise seeds from the seed, and computes the gradient of its share
 * of each global batch; the shares are summed here and every rank applies the
 * same Adam step.  Rank 0 alone writes checkpoints, state and logs.
 *
 * Two builds of one source file (src/dist.c):
 *   - plain (build/latentd, the default): no MPI; ld_dist_size() is 1 and every
 *     collective returns at once.  Started by mpirun it refuses to train
 *     (ld_dist_init), so K copies never write the same files;
 *   - MPI (build/latentd-mpi, `make mpi`, compiled with mpicc -DLD_MPI=1): MPI
 *     is initialised only when the process was started by mpirun (Open MPI's
 *     OMPI_COMM_WORLD_SIZE, or PMIx's PMIX_RANK); run alone it behaves like the
 *     plain build.
 *
 * Sums are deterministic: each rank's vector is gathered to every rank and
 * added in rank order, so every rank gets the same bits, on every run (an
 * MPI_Allreduce may add in another order on each rank, and ranks whose
 * parameters drift apart by one bit no longer train one model).
 *
 * Threads: MPI runs FUNNELED; every ld_dist_* call except ld_dist_rank,
 * ld_dist_size and ld_dist_stats must come from the thread that called
 * ld_dist_init (the trainer's worker 0: the CLI's main thread).  Collectives
 * are matched by order: every rank makes the same calls with the same n.
 *
 * Errors: MPI's default handler aborts the whole job on a communication
 * failure (a rank died); mpirun then kills the other ranks.  A rank that
 * fails on its own (bad input) calls ld_dist_abort so the others do not wait
 * for it forever.
 */
#ifndef LATENTD_DIST_H
#define LATENTD_DIST_H

#include "latentd/common.h"

#include <stddef.h>

/* Initialise MPI when the process was started by a launcher.  0, or
 * LD_EUNSUPPORTED with a message when the plain build was started by mpirun
 * with more than one rank. */
int ld_dist_init(int *argc, char ***argv, ld_err_t *err);
/* MPI_Finalize (when initialised).  Safe to call more than once. */
void ld_dist_finalize(void);
/* Stop every rank with the exit code (MPI_Abort); exit(code) without MPI. */
void ld_dist_abort(int code) __attribute__((noreturn));

int ld_dist_rank(void);   /* 0.. (0 without MPI) */
int ld_dist_size(void);   /* 1.. (1 without MPI) */
/* "mpi" when this binary was built with MPI, "none" otherwise. */
const char *ld_dist_build(void);

/* buf (n) := the sum over ranks of every rank's buf (n), in rank order. */
void ld_dist_allreduce_sum(float *buf, size_t n);
void ld_dist_allreduce_sum_d(double *buf, size_t n);
/* buf (n) := rank 0's buf (n). */
void ld_dist_bcast(float *buf, size_t n);
/* Nonzero on every rank when flag is nonzero on any rank. */
int ld_dist_any(int flag);

typedef struct {
    long calls;       /* collectives run */
    double bytes;     /* bytes of this rank's own vectors put into them */
    double seconds;   /* wall time inside them (waiting for slower ranks included) */
} ld_dist_stats_t;
/* What this process has spent in collectives so far. */
void ld_dist_stats(ld_dist_stats_t *s);

#endif
