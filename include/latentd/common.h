/* common.h — status codes, the error struct, and small shared macros.
 *
 * Every function that can fail returns an int status (LD_OK or a negative
 * ld_status_t) and, when given a non-NULL ld_err_t, writes a one-line
 * human-readable message into it.  The HTTP layer returns that message
 * verbatim, so it must name the field, file or value at fault.
 *
 * Thread-safety: everything here is reentrant.
 */
#ifndef LATENTD_COMMON_H
#define LATENTD_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum {
    LD_OK = 0,
    LD_EINVAL = -1,       /* bad argument or value (user input) */
    LD_EIO = -2,          /* read/write/open failed */
    LD_ENOMEM = -3,       /* allocation failed */
    LD_EFORMAT = -4,      /* a file or body is malformed */
    LD_ENOTFOUND = -5,    /* no such file / name */
    LD_ECANCELLED = -6,   /* stopped by a callback or a signal */
    LD_EUNSUPPORTED = -7, /* well-formed but not possible (e.g. encode on a GAN) */
    LD_EBUSY = -8,        /* queue full / overloaded */
} ld_status_t;

typedef struct {
    char msg[512];
} ld_err_t;

/* Format a message into err (if err is not NULL) and return code. */
int ld_err_set(ld_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The short name of a status ("EINVAL", ...). Never NULL. */
const char *ld_status_name(int code);

/* Programmer-error assertion: prints file:line and aborts. Never use it for input. */
#define LD_ASSERT(cond)                                                              \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

#define LD_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* malloc/calloc that return NULL on n*size overflow. */
void *ld_calloc(size_t n, size_t size);
void *ld_malloc_array(size_t n, size_t size);

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double ld_now(void);
/* Current UTC time as "YYYY-MM-DDTHH:MM:SSZ" into buf (>= 21 bytes). */
void ld_utc_iso8601(char *buf, size_t len);

#endif
