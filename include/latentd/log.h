/* log.h — leveled, line-atomic logging to stderr.
 *
 * Each call writes exactly one line with one write(2), so lines from many
 * threads never interleave (buffered access lines: several whole lines per
 * write, see ld_log_access).  Format on a terminal or a plain file:
 *   2024-05-01T12:00:00Z info  message
 * When stderr is the systemd journal ($JOURNAL_STREAM set), the timestamp is
 * dropped and a "<N>" syslog priority prefix is written instead, so journald
 * records the level.
 *
 * Thread-safety: every function may be called from any thread; the level is
 * an atomic read.
 */
#ifndef LATENTD_LOG_H
#define LATENTD_LOG_H

typedef enum {
    LD_LOG_DEBUG = 0,
    LD_LOG_INFO = 1,
    LD_LOG_WARN = 2,
    LD_LOG_ERROR = 3,
} ld_log_level_t;

/* "debug", "info", "warn" (or "warning"), "error" -> *out; 0 or -1. */
int ld_log_level_parse(const char *s, ld_log_level_t *out);
const char *ld_log_level_name(ld_log_level_t l);

/* Lines below level are dropped. Default LD_LOG_INFO. */
void ld_log_set_level(ld_log_level_t level);
int ld_log_enabled(ld_log_level_t level);

/* printf-style; a trailing newline is added (and control characters in the
 * formatted text are replaced by '?', so a request path cannot forge lines). */
void ld_log(ld_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The access line of one finished request (info level):
 *   access method=M path=P status=S bytes=B us=U peer=A rid=R<end>
 * (path cut at 300 bytes; R the request id, X-Request-Id, at most 128; end
 * is "" or " end=REASON").  Formatted without
 * printf.  Once ld_log_access_start() has run, access lines are buffered and
 * written together by a flusher thread at least every 50 ms, and before any
 * other line, so lines keep their order; a kill -9 loses at most the last
 * 50 ms of access lines.  Otherwise each is written at once like ld_log. */
void ld_log_access(const char *method, const char *path, int status, long long bytes,
                   long long us, const char *peer, const char *rid, const char *end);
/* Start buffering access lines (the daemon, once); 0 or -1 (no thread:
 * lines stay unbuffered). */
int ld_log_access_start(void);
/* Write the buffered access lines and stop buffering (idempotent). */
void ld_log_access_stop(void);

#define ld_log_debug(...) ld_log(LD_LOG_DEBUG, __VA_ARGS__)
#define ld_log_info(...) ld_log(LD_LOG_INFO, __VA_ARGS__)
#define ld_log_warn(...) ld_log(LD_LOG_WARN, __VA_ARGS__)
#define ld_log_error(...) ld_log(LD_LOG_ERROR, __VA_ARGS__)

#endif
