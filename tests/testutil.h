/* testutil.h — shared helpers for the Check suites (one runner, tests/check_main.c).
 *
 * Each tests/check_<module>.c defines `Suite *suite_<module>(void)` at the start
 * of a line; the Makefile finds it and adds it to the runner. */
#ifndef LATENTD_TESTUTIL_H
#define LATENTD_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Path of the latentd binary under test (plain or sanitized build). */
#ifndef LD_BIN
#define LD_BIN "build/latentd"
#endif

/* Make a fresh temporary folder; returns a malloc'd path. */
char *tu_mkdtemp(void);
/* rm -rf path (only under /tmp). */
void tu_rmrf(const char *path);
/* Max |a[i]| over n values. */
double tu_max_abs(const float *a, size_t n);
/* Max |a-b| / max(|b|, floor) over n values. */
double tu_max_rel_diff(const float *a, const float *b, size_t n, double floor);

#endif
