/* log.c — see include/latentd/log.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/log.h"

#include "latentd/buf.h"
#include "latentd/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
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

static void write_all(const char *p, size_t left)
{
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

/* Access lines, once ld_log_access_start() has run: appended to the current
 * buffer under acc_mu (a copy, nothing more), and written by the flusher
 * thread every ACCESS_FLUSH_MS or when the buffer is half full; by the
 * appending thread only when it is full.  Writing swaps the current buffer
 * with the spare under acc_mu and writes the full one under wr_mu alone, so
 * a thread appending a line never waits for the disk (or for a writer whose
 * CPU the host has paused).  wr_mu orders every write to stderr while
 * buffering is on: a line that is not an access line first writes what is
 * buffered, then itself, so lines keep their order.
 * Lock order: wr_mu, then acc_mu. */
#define ACCESS_FLUSH_MS 50
#define ACCESS_BUF (256 * 1024)
static pthread_mutex_t g_wr_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_acc_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_acc_cv = PTHREAD_COND_INITIALIZER;
static char g_acc_bufs[2][ACCESS_BUF];
static char *g_acc = g_acc_bufs[0];    /* current; guarded by acc_mu */
static size_t g_acc_len;               /* guarded by acc_mu */
static int g_acc_on, g_acc_stop;       /* guarded by acc_mu */
static int g_acc_kicked;               /* flusher signalled (half full); acc_mu */
static char *g_spare = g_acc_bufs[1];  /* guarded by wr_mu */
static atomic_int g_acc_buffered;      /* g_acc_on, read without the lock */
static pthread_t g_acc_thread;

/* Swap the buffers and write what was buffered; wr_mu held, acc_mu not.
 * Returns with the buffering switched off if off is set (ld_log_access_stop),
 * so that no line can be appended after this write. */
static void acc_write_wr_locked(int off)
{
    pthread_mutex_lock(&g_acc_mu);
    char *full = g_acc;
    size_t n = g_acc_len;
    g_acc = g_spare;
    g_acc_len = 0;
    g_acc_kicked = 0;
    if (off) {
        g_acc_on = 0;
        g_acc_stop = 1;
    }
    pthread_mutex_unlock(&g_acc_mu);
    g_spare = full;
    write_all(full, n);
}

static void *acc_flusher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_acc_mu);
    while (!g_acc_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += ACCESS_FLUSH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (!g_acc_kicked)
            pthread_cond_timedwait(&g_acc_cv, &g_acc_mu, &ts);
        if (g_acc_stop)
            break;
        pthread_mutex_unlock(&g_acc_mu);
        pthread_mutex_lock(&g_wr_mu);
        acc_write_wr_locked(0);
        pthread_mutex_unlock(&g_wr_mu);
        pthread_mutex_lock(&g_acc_mu);
    }
    pthread_mutex_unlock(&g_acc_mu);
    return NULL;
}

int ld_log_access_start(void)
{
    pthread_mutex_lock(&g_acc_mu);
    int rc = 0;
    if (!g_acc_on) {
        g_acc_stop = 0;
        g_acc_kicked = 0;
        rc = pthread_create(&g_acc_thread, NULL, acc_flusher, NULL);
        if (rc == 0) {
            g_acc_on = 1;
            atomic_store(&g_acc_buffered, 1);
        }
    }
    pthread_mutex_unlock(&g_acc_mu);
    return rc == 0 ? 0 : -1;
}

void ld_log_access_stop(void)
{
    pthread_mutex_lock(&g_wr_mu);
    pthread_mutex_lock(&g_acc_mu);
    int on = g_acc_on;
    pthread_mutex_unlock(&g_acc_mu);
    if (!on) {
        pthread_mutex_unlock(&g_wr_mu);
        return;
    }
    /* the last buffered lines, with the buffering switched off at the swap:
     * a line emitted meanwhile waits for wr_mu and follows them */
    acc_write_wr_locked(1);
    atomic_store(&g_acc_buffered, 0);
    pthread_mutex_unlock(&g_wr_mu);
    pthread_mutex_lock(&g_acc_mu);
    pthread_cond_signal(&g_acc_cv);
    pthread_mutex_unlock(&g_acc_mu);
    pthread_join(g_acc_thread, NULL);
}

/* One finished line (with its newline) to stderr: after the buffered access
 * lines, or into their buffer when access is set. */
static void emit(const char *line, size_t len, int access)
{
    if (!atomic_load_explicit(&g_acc_buffered, memory_order_relaxed)) {
        write_all(line, len);
        return;
    }
    if (access) {
        pthread_mutex_lock(&g_acc_mu);
        if (g_acc_on && g_acc_len + len <= ACCESS_BUF) {
            memcpy(g_acc + g_acc_len, line, len);
            g_acc_len += len;
            if (g_acc_len > ACCESS_BUF / 2 && !g_acc_kicked) {
                g_acc_kicked = 1;
                pthread_cond_signal(&g_acc_cv);
            }
            pthread_mutex_unlock(&g_acc_mu);
            return;
        }
        pthread_mutex_unlock(&g_acc_mu);
    }
    /* not an access line, the buffer is full, or buffering stopped */
    pthread_mutex_lock(&g_wr_mu);
    acc_write_wr_locked(0);
    int buffered = 0;
    if (access && len <= ACCESS_BUF) {
        pthread_mutex_lock(&g_acc_mu);
        if (g_acc_on && g_acc_len + len <= ACCESS_BUF) {
            memcpy(g_acc + g_acc_len, line, len);
            g_acc_len += len;
            buffered = 1;
        }
        pthread_mutex_unlock(&g_acc_mu);
    }
    if (!buffered)
        write_all(line, len);
    pthread_mutex_unlock(&g_wr_mu);
}

/* The line prefix: "<N>" for the journal, else "TIMESTAMP LEVEL " (level
 * padded to 5).  Returns its length (< 40). */
static int line_prefix(char *line, ld_log_level_t level)
{
    static const char prio[] = {'7', '6', '4', '3'}; /* syslog debug, info, warning, err */
    if (to_journal()) {
        line[0] = '<';
        line[1] = prio[level];
        line[2] = '>';
        return 3;
    }
    char ts[32];
    ld_utc_iso8601(ts, sizeof ts);
    size_t n = strlen(ts);
    memcpy(line, ts, n);
    line[n++] = ' ';
    const char *name = ld_log_level_name(level);
    size_t k = strlen(name);
    memcpy(line + n, name, k);
    for (; k < 5; k++)
        line[n + k] = ' ';
    n += k;
    line[n++] = ' ';
    return (int)n;
}

/* Control characters in line[from, to) become '?' (a request path cannot
 * forge lines). */
static void sanitize(char *line, int from, int to)
{
    for (int i = from; i < to; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7F)
            line[i] = '?';
    }
}

void ld_log(ld_log_level_t level, const char *fmt, ...)
{
    if (!ld_log_enabled(level))
        return;
    char line[2048];
    int pos = line_prefix(line, level);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line + pos, sizeof line - (size_t)pos - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    int end = pos + n;
    if (end > (int)sizeof line - 2)
        end = (int)sizeof line - 2; /* truncated */
    sanitize(line, pos, end);
    line[end++] = '\n';
    emit(line, (size_t)end, 0);
}

/* Append s (at most max bytes) to line at *pos, within cap. */
static void put_str(char *line, int *pos, int cap, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    if (n > (size_t)(cap - *pos))
        n = (size_t)(cap - *pos);
    memcpy(line + *pos, s, n);
    *pos += (int)n;
}

static void put_int(char *line, int *pos, int cap, long long v)
{
    char d[24];
    int k = ld_fmt_i64(d, v);
    put_str(line, pos, cap, d, (size_t)k);
}

void ld_log_access(const char *method, const char *path, int status, long long bytes,
                   long long us, const char *peer, const char *rid, const char *end)
{
    if (!ld_log_enabled(LD_LOG_INFO))
        return;
    /* "access method=%s path=%.300s status=%d bytes=%lld us=%lld peer=%s rid=%.128s%s",
     * without printf (every printf in this process takes glibc's slow path:
     * libquadmath, loaded with OpenBLAS, registers a printf type) */
    char line[1024];
    const int cap = (int)sizeof line - 1;
    int pos = line_prefix(line, LD_LOG_INFO);
    int from = pos;
    put_str(line, &pos, cap, "access method=", SIZE_MAX);
    put_str(line, &pos, cap, method, 64);
    put_str(line, &pos, cap, " path=", SIZE_MAX);
    put_str(line, &pos, cap, path, 300);
    put_str(line, &pos, cap, " status=", SIZE_MAX);
    put_int(line, &pos, cap, status);
    put_str(line, &pos, cap, " bytes=", SIZE_MAX);
    put_int(line, &pos, cap, bytes);
    put_str(line, &pos, cap, " us=", SIZE_MAX);
    put_int(line, &pos, cap, us);
    put_str(line, &pos, cap, " peer=", SIZE_MAX);
    put_str(line, &pos, cap, peer, 64);
    put_str(line, &pos, cap, " rid=", SIZE_MAX);
    put_str(line, &pos, cap, rid, 128);
    put_str(line, &pos, cap, end, 64);
    sanitize(line, from, pos);
    line[pos++] = '\n';
    emit(line, (size_t)pos, 1);
}
