/* log.c — see include/latentd/log.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/log.h"

#include "latentd/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int g_level = LD_LOG_INFO;
static atomic_int g_journal = -1; /* -1 unknown, 0 no, 1 stderr is the journal */

int ld_log_level_parse(const char *s, ld_log_level_t *out)
{
    static const struct {
        const char *name;
        ld_log_level_t level;
    } names[] = {{"debug", LD_LOG_DEBUG}, {"info", LD_LOG_INFO},   {"warn", LD_LOG_WARN},
                 {"warning", LD_LOG_WARN}, {"error", LD_LOG_ERROR}};
    for (size_t i = 0; i < LD_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return 0;
        }
    }
    return -1;
}

const char *ld_log_level_name(ld_log_level_t l)
{
    switch (l) {
    case LD_LOG_DEBUG: return "debug";
    case LD_LOG_INFO: return "info";
    case LD_LOG_WARN: return "warn";
    case LD_LOG_ERROR: return "error";
    }
    return "?";
}

void ld_log_set_level(ld_log_level_t level)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

int ld_log_enabled(ld_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&g_level, memory_order_relaxed);
}

static int to_journal(void)
{
    int j = atomic_load_explicit(&g_journal, memory_order_relaxed);
    if (j < 0) {
        const char *s = getenv("JOURNAL_STREAM");
        j = s && *s;
        atomic_store_explicit(&g_journal, j, memory_order_relaxed);
    }
    return j;
}

void ld_log(ld_log_level_t level, const char *fmt, ...)
{
    if (!ld_log_enabled(level))
        return;
    static const int prio[] = {7, 6, 4, 3}; /* syslog debug, info, warning, err */
    char line[2048];
    int pos;
    if (to_journal()) {
        pos = snprintf(line, sizeof line, "<%d>", prio[level]);
    } else {
        char ts[32];
        ld_utc_iso8601(ts, sizeof ts);
        pos = snprintf(line, sizeof line, "%s %-5s ", ts, ld_log_level_name(level));
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + pos, sizeof line - (size_t)pos - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    int end = pos + n;
    if (end > (int)sizeof line - 2)
        end = (int)sizeof line - 2; /* truncated */
    for (int i = pos; i < end; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7F)
            line[i] = '?';
    }
    line[end++] = '\n';
    const char *p = line;
    size_t left = (size_t)end;
    while (left > 0) {
        ssize_t w = write(STDERR_FILENO, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere to report a failing stderr */
        }
        p += w;
        left -= (size_t)w;
    }
}
