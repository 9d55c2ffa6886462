/* tu_sh.h — run a shell command line as a user would type it, and keep what
 * it printed.
 *
 * tu_sh(&out, fmt, ...) runs the formatted command with /bin/sh (popen),
 * stdout and stderr together into *out (malloc'd, NUL-terminated; the caller
 * frees; pass NULL to drop it).  Returns the exit code, or 128 when the
 * command did not exit normally.  Fails the test if the shell cannot start.
 * Call from the test's own thread. */
#ifndef LATENTD_TU_SH_H
#define LATENTD_TU_SH_H

int tu_sh(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
