/* hostprobe.c — how much CPU time the machine itself loses while a
 * benchmark runs (bench-serve runs it beside every wrk measurement).
 *
 * On a virtual machine the host can take a vCPU away for a while (other
 * guests, the host's own work) without the guest kernel seeing it: no steal
 * time is reported, the guest's clock runs on, and whatever was running
 * appears to have run slowly.  A latency benchmark cannot tell such a pause
 * from its server's own slowness, and at 64 connections a few pauses of
 * some milliseconds decide the p99.
 *
 * Method.  One thread per online CPU, pinned to it, SCHED_FIFO if allowed
 * (root), so that no guest thread can preempt it.  Every PERIOD_US it times
 * a fixed computation of about 20 microseconds, and subtracts the time it
 * spent waiting for its CPU in the guest's run queue (run_delay from
 * /proc/thread-self/schedstat; 0 under SCHED_FIFO).  What a probe takes
 * beyond the median probe is time its vCPU did not compute: the host's (or
 * an interrupt's, which is small).  Cost: 0.4% of each CPU.
 *
 * Output, one line at the end:
 *   HOSTPROBE lost_pct slow_pct p99_us max_us median_us fifo
 * lost_pct  share of the probes' time spent beyond the median probe's (an
 *           estimate of the share of the run the CPUs were not the guest's)
 * slow_pct  share of probes that took more than 3 times the median
 * p99_us, max_us, median_us  the probes' times; fifo 1 if SCHED_FIFO
 *
 * Usage: hostprobe SECONDS
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_US 5000
#define MAX_CPUS 256

typedef struct {
    int cpu;
    double seconds;
    int fifo;    /* SCHED_FIFO was granted */
    int n;       /* probes taken */
    double *us;  /* (n) each probe's computing time, microseconds */
} probe_t;

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Microseconds this thread has waited on the guest's run queue so far (-1: unknown). */
static double run_delay_us(int fd)
{
    char b[128];
    ssize_t k = fd >= 0 ? pread(fd, b, sizeof b - 1, 0) : -1;
    if (k <= 0)
        return -1;
    b[k] = '\0';
    unsigned long long exec_ns, delay_ns;
    if (sscanf(b, "%llu %llu", &exec_ns, &delay_ns) != 2)
        return -1;
    return (double)delay_ns / 1e3;
}

static volatile double g_sink;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void *probe_main(void *arg)
{
    probe_t *p = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(p->cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
    struct sched_param sp = {.sched_priority = 1};
    p->fifo = sched_setscheduler(0, SCHED_FIFO, &sp) == 0;
    int fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    int cap = (int)(p->seconds * 1e6 / PERIOD_US) + 16;
    p->us = malloc((size_t)cap * sizeof *p->us);
    if (!p->us)
        return NULL;
    double end = now_us() + p->seconds * 1e6;
    while (p->n < cap && now_us() < end) {
        double d0 = run_delay_us(fd);
        double t0 = now_us();
        double x = 1.0;
        for (int i = 0; i < 8000; i++) /* about 20 us: a dependent chain */
            x = x * 1.0000001 + 1e-9;
        g_sink = x;
        double t1 = now_us();
        double d1 = run_delay_us(fd);
        double wait = d0 >= 0 && d1 >= 0 ? d1 - d0 : 0;
        p->us[p->n++] = t1 - t0 - wait;
        struct timespec ts = {0, PERIOD_US * 1000L};
        nanosleep(&ts, NULL);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 0;
    if (seconds <= 0) {
        fprintf(stderr, "usage: hostprobe SECONDS\n");
        return 2;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > MAX_CPUS)
        ncpu = MAX_CPUS;
    static probe_t probes[MAX_CPUS];
    static pthread_t threads[MAX_CPUS];
    for (int c = 0; c < ncpu; c++) {
        probes[c] = (probe_t){.cpu = c, .seconds = seconds};
        if (pthread_create(&threads[c], NULL, probe_main, &probes[c]) != 0) {
            perror("hostprobe: pthread_create");
            return 1;
        }
    }
    int n = 0, fifo = 1;
    for (int c = 0; c < ncpu; c++) {
        pthread_join(threads[c], NULL);
        fifo &= probes[c].fifo;
        n += probes[c].n;
    }
    double *all = malloc((size_t)(n > 0 ? n : 1) * sizeof *all); /* (n) every probe */
    if (!all || n == 0) {
        fprintf(stderr, "hostprobe: no probes taken\n");
        return 1;
    }
    n = 0;
    for (int c = 0; c < ncpu; c++) {
        for (int i = 0; i < probes[c].n; i++)
            all[n++] = probes[c].us[i];
        free(probes[c].us);
    }
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    double med = all[n / 2], sum = 0, lost = 0;
    int slow = 0;
    for (int i = 0; i < n; i++) {
        sum += all[i];
        lost += all[i] > med ? all[i] - med : 0;
        slow += all[i] > 3 * med;
    }
    printf("HOSTPROBE %.2f %.2f %.0f %.0f %.1f %d\n", 100 * lost / sum, 100.0 * slow / n,
           all[n * 99 / 100], all[n - 1], med, fifo);
    free(all);
    return 0;
}
