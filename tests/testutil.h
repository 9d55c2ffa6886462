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
/* A test (or a part of one) that cannot run here: prints "SKIPPED: <reason>"
 * to stderr and counts it; the runner prints the count at the end, so a skip
 * is never silent.  Call it, then return (or go on with the rest). */
void tu_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
