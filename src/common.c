/* common.c — see include/latentd/common.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/common.h"

#include <stdarg.h>
#include <string.h>
#include <time.h>

int ld_err_set(ld_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *ld_status_name(int code)
{
    switch (code) {
    case LD_OK: return "OK";
    case LD_EINVAL: return "EINVAL";
    case LD_EIO: return "EIO";
    case LD_ENOMEM: return "ENOMEM";
    case LD_EFORMAT: return "EFORMAT";
    case LD_ENOTFOUND: return "ENOTFOUND";
    case LD_ECANCELLED: return "ECANCELLED";
    case LD_EUNSUPPORTED: return "EUNSUPPORTED";
    case LD_EBUSY: return "EBUSY";
    default: return "EUNKNOWN";
    }
}

void *ld_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *ld_malloc_array(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    return malloc(n && size ? n * size : 1);
}

double ld_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void ld_utc_iso8601(char *buf, size_t len)
{
    /* formatted once per second per thread: every access-log line asks */
    static _Thread_local time_t last = (time_t)-1;
    static _Thread_local char text[32];
    time_t t = time(NULL);
    if (t != last) {
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
        last = t;
    }
    /* a plain bounded copy: snprintf costs as much as the rest of an
     * access line (glibc takes its positional path in this process) */
    if (len) {
        size_t n = strnlen(text, len - 1);
        memcpy(buf, text, n);
        buf[n] = '\0';
    }
}
