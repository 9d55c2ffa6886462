/* strtod.h — a faster strtod (and localeconv and strncmp) for the whole
 * process, with glibc's results.
 *
 * cJSON reads every JSON number with strtod, and glibc's strtod takes its
 * multi-precision path for every decimal fraction: about 90 ns a number, a
 * tenth of the daemon's CPU time for a `decode` body of 100 numbers, and
 * more than the pass that decodes it.  cJSON is Debian's shared library and
 * cannot be told to use another parser, so src/strtod.c defines strtod
 * itself: the executable's definition comes first in the dynamic linker's
 * search order, so libcjson (and every other caller in the process) calls it.
 *
 * It returns exactly what glibc's strtod returns — the same value, end
 * pointer and errno — because it only answers the inputs where that is
 * certain and hands everything else to glibc's strtod (found with
 * dlsym(RTLD_NEXT)):
 *   [-]digits[.digits][(e|E)[+|-]digits] with at most 19 significant digits
 *   forming an integer m <= 2^53, and a decimal exponent |e| <= 22.
 * Then m and 10^|e| are both exact doubles and one IEEE multiplication or
 * division rounds m * 10^e correctly (Clinger's fast path), as glibc's
 * correctly rounded result is.  Leading white space, '+', hexadecimal,
 * infinities, NaN, malformed exponents and all longer or larger numbers go
 * to glibc.  The decimal point is '.', the C locale's: latentd never calls
 * setlocale (a test checks the results against glibc's on millions of
 * inputs).
 *
 * localeconv.  cJSON also calls localeconv() before every number it reads,
 * for the decimal point; glibc's copies the whole current locale's numeric
 * and monetary fields on every call (about 4% of the daemon's CPU time for
 * a `decode` body, 784 calls for each image sent to `encode`).  For the
 * same reason as above the executable defines localeconv too, returning
 * the C locale's fields (POSIX gives them: "." and "" and CHAR_MAX), which
 * are the process's for its whole life since latentd never calls setlocale
 * (a test checks every field against glibc's).
 *
 * strncmp.  Before each value cJSON compares the text with "null", "false"
 * and "true" by strncmp, three calls of a few bytes per number; glibc's
 * vector strncmp costs more in its set-up than those bytes (3.2% of the
 * daemon's CPU for a `decode` body).  The executable's strncmp is a plain
 * byte loop, usually done at the first byte (a test compares its sign with
 * glibc's on random strings).
 *
 * Thread-safety: reentrant.
 */
#ifndef LATENTD_STRTOD_H
#define LATENTD_STRTOD_H

#include <stddef.h>

/* How many strtod calls on this thread took the fast path (for tests:
 * proves that a library's calls reach this strtod). */
unsigned long ld_strtod_fast_calls(void);

/* glibc's own strtod (the one the fast path falls back to). */
double ld_strtod_libc(const char *s, char **end);

struct lconv;
/* glibc's own localeconv (for the test that compares the fields). */
struct lconv *ld_localeconv_libc(void);

/* strncmp calls on this thread (tests: proves cJSON's reach the process's),
 * and glibc's own strncmp (tests). */
unsigned long ld_strncmp_calls(void);
int ld_strncmp_libc(const char *a, const char *b, size_t n);

#endif
