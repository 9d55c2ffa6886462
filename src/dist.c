/* dist.c — MPI ranks for data-parallel training. See dist.h.
 *
 * The one file that knows MPI: compiled with -DLD_MPI=1 by mpicc for
 * build/latentd-mpi, and without it (every collective a no-op) for everything
 * else.  A sum gathers every rank's vector (MPI_Allgather) and adds them in
 * rank order, in chunks so the gather buffer stays bounded. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/dist.h"

#include <stdlib.h>
#include <string.h>

static ld_dist_stats_t g_stats;

/* The launcher's world size from the environment (0 when not launched). */
static int env_world_size(void)
{
    const char *s = getenv("OMPI_COMM_WORLD_SIZE");
    if (!s)
        s = getenv("PMI_SIZE");
    return s ? atoi(s) : 0;
}

void ld_dist_stats(ld_dist_stats_t *s) { *s = g_stats; }

#ifndef LD_MPI

int ld_dist_init(int *argc, char ***argv, ld_err_t *err)
{
    (void)argc, (void)argv;
    if (env_world_size() > 1)
        return ld_err_set(err, LD_EUNSUPPORTED,
                          "this latentd was built without MPI, so %d ranks would each train alone; "
                          "run build/latentd-mpi (make mpi)",
                          env_world_size());
    return LD_OK;
}
void ld_dist_finalize(void) {}
void ld_dist_abort(int code) { exit(code); }
int ld_dist_rank(void) { return 0; }
int ld_dist_size(void) { return 1; }
const char *ld_dist_build(void) { return "none"; }
void ld_dist_allreduce_sum(float *buf, size_t n) { (void)buf, (void)n; }
void ld_dist_allreduce_sum_d(double *buf, size_t n) { (void)buf, (void)n; }
void ld_dist_bcast(float *buf, size_t n) { (void)buf, (void)n; }
int ld_dist_any(int flag) { return flag != 0; }

#else /* LD_MPI */

#include <mpi.h>

static int g_rank, g_size = 1, g_on;
static void *g_gather;          /* (size, CHUNK) elements of the widest type */
#define CHUNK ((size_t)1 << 18) /* elements per gather */

int ld_dist_init(int *argc, char ***argv, ld_err_t *err)
{
    if (g_on || (env_world_size() == 0 && !getenv("PMIX_RANK")))
        return LD_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ld_err_set(err, LD_EIO, "MPI_Init_thread failed");
    g_on = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_size > 1 && !(g_gather = ld_malloc_array((size_t)g_size * CHUNK, sizeof(double))))
        return ld_err_set(err, LD_ENOMEM, "out of memory for the gradient gather");
    return LD_OK;
}

void ld_dist_finalize(void)
{
    if (!g_on)
        return;
    g_on = 0;
    free(g_gather);
    g_gather = NULL;
    MPI_Finalize();
}

void ld_dist_abort(int code)
{
    if (g_on && g_size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int ld_dist_rank(void) { return g_rank; }
int ld_dist_size(void) { return g_size; }
const char *ld_dist_build(void) { return "mpi"; }

#define DIST_SUM(NAME, T, MPI_T)                                                        \
    void NAME(T *buf, size_t n)                                                         \
    {                                                                                   \
        if (g_size == 1)                                                                \
            return;                                                                     \
        double t0 = MPI_Wtime();                                                        \
        T *all = g_gather;                                                              \
        for (size_t off = 0; off < n; off += CHUNK) {                                   \
            size_t c = n - off < CHUNK ? n - off : CHUNK;                               \
            MPI_Allgather(buf + off, (int)c, MPI_T, all, (int)c, MPI_T, MPI_COMM_WORLD); \
            memcpy(buf + off, all, c * sizeof(T));                                      \
            for (int r = 1; r < g_size; r++) {                                          \
                const T *s = all + (size_t)r * c;                                       \
                for (size_t i = 0; i < c; i++)                                          \
                    buf[off + i] += s[i];                                               \
            }                                                                           \
        }                                                                               \
        g_stats.calls++;                                                                \
        g_stats.bytes += (double)n * sizeof(T);                                         \
        g_stats.seconds += MPI_Wtime() - t0;                                            \
    }
DIST_SUM(ld_dist_allreduce_sum, float, MPI_FLOAT)
DIST_SUM(ld_dist_allreduce_sum_d, double, MPI_DOUBLE)

void ld_dist_bcast(float *buf, size_t n)
{
    if (g_size == 1)
        return;
    double t0 = MPI_Wtime();
    for (size_t off = 0; off < n; off += CHUNK) {
        size_t c = n - off < CHUNK ? n - off : CHUNK;
        MPI_Bcast(buf + off, (int)c, MPI_FLOAT, 0, MPI_COMM_WORLD);
    }
    g_stats.calls++;
    g_stats.bytes += g_rank == 0 ? (double)n * sizeof(float) : 0;
    g_stats.seconds += MPI_Wtime() - t0;
}

int ld_dist_any(int flag)
{
    if (g_size == 1)
        return flag != 0;
    int in = flag != 0, out = 0;
    MPI_Allreduce(&in, &out, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return out;
}

#endif /* LD_MPI */
