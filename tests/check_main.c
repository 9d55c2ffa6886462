/* check_main.c — one Check runner for every suite (see testutil.h). */
#define _GNU_SOURCE
#include "testutil.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define X(fn) Suite *fn(void);
#include "suites.h"
#undef X

char *tu_mkdtemp(void)
{
    char *p = strdup("/tmp/latentd-test-XXXXXX");
    if (!p || !mkdtemp(p)) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

void tu_rmrf(const char *path)
{
    if (!path || strncmp(path, "/tmp/", 5) != 0 || strstr(path, ".."))
        return;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0)
        fprintf(stderr, "rm -rf %s failed\n", path);
}

double tu_max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

double tu_max_rel_diff(const float *a, const float *b, size_t n, double floor)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double s = fabs((double)b[i]);
        double r = d / (s > floor ? s : floor);
        if (!(r <= worst)) /* also catches NaN */
            worst = isnan(r) ? INFINITY : r;
    }
    return worst;
}

/* Shared with the forked test processes (Check's default), so their skips
 * reach the runner's count. */
static atomic_int *g_skipped;

void tu_skip(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "SKIPPED: %s\n", msg);
    if (g_skipped)
        atomic_fetch_add(g_skipped, 1);
}

int main(int argc, char **argv)
{
    void *shm = mmap(NULL, sizeof *g_skipped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                     -1, 0);
    if (shm != MAP_FAILED)
        g_skipped = shm;
    SRunner *sr = srunner_create(NULL);
    const char *only = argc > 1 ? argv[1] : getenv("LD_SUITE");
#define X(fn) if (!only || strstr(#fn, only)) srunner_add_suite(sr, fn());
#include "suites.h"
#undef X
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (g_skipped && atomic_load(g_skipped) > 0)
        printf("Skipped: %d (see the SKIPPED: lines above)\n", atomic_load(g_skipped));
    return failed == 0 ? 0 : 1;
}
