/* http_head.c — the checks a raw request head must pass before
 * libmicrohttpd reads it (see ld_http_head_check in http_impl.h).
 *
 * libmicrohttpd answers some malformed heads itself, with HTML (and, for a
 * non-numeric Content-Length, its status line twice), and runs out of its
 * per-connection pool on heads with very many fields, after which it cannot
 * answer at all.  The acceptor shows it only heads that pass here; the rest
 * get the documented JSON error.  Pure functions: any thread.
 */
#include "http_impl.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int ld_http_query_params(const char *target, size_t len)
{
    const char *q = memchr(target, '?', len);
    if (!q)
        return 0;
    int n = 1;
    for (const char *e = target + len; q < e; q++)
        n += *q == '&';
    return n;
}

int ld_http_length_ok(const char *v, size_t n)
{
    size_t digits = 0;
    while (digits < n && v[digits] >= '0' && v[digits] <= '9')
        digits++;
    return n > 0 && digits == n && n <= 18;
}

static int reject(ld_head_verdict_t *v, int status, const char *code, const char *msg)
{
    v->status = status;
    v->code = code;
    snprintf(v->msg, sizeof v->msg, "%s", msg);
    return LD_HEAD_REJECT;
}

int ld_http_target_check(const char *target, size_t len, ld_head_verdict_t *v)
{
    if (ld_http_query_params(target, len) <= MAX_QUERY_PARAMS)
        return LD_HEAD_OK;
    char msg[96];
    snprintf(msg, sizeof msg, "the query string has more than %d parameters", MAX_QUERY_PARAMS);
    return reject(v, 414, "uri_too_long", msg);
}

/* The length of the line at p (without its LF or CRLF) and where the next
 * begins; -1 when the line has no end before e. */
static long line_at(const char *p, const char *e, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(e - p));
    if (!lf)
        return -1;
    *next = lf + 1;
    return (long)(lf > p && lf[-1] == '\r' ? lf - 1 - p : lf - p);
}

int ld_http_head_check(const char *buf, size_t len, size_t cap, ld_head_verdict_t *v)
{
    const char *p = buf, *e = buf + len, *next;
    /* the request line: method SP target SP version */
    long n = line_at(p, e, &next);
    if (n < 0)
        goto incomplete;
    const char *sp1 = memchr(p, ' ', (size_t)n);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(p + n - sp1 - 1)) : NULL;
    if (!sp2)
        return LD_HEAD_OK; /* not HTTP/1.x: libmicrohttpd's business */
    int http11 = (size_t)(p + n - sp2 - 1) == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0;
    if (ld_http_target_check(sp1 + 1, (size_t)(sp2 - sp1 - 1), v) != LD_HEAD_OK)
        return LD_HEAD_REJECT;
    /* the fields, up to the empty line */
    int fields = 0, host = 0;
    const char *cl = NULL;
    size_t cl_len = 0;
    for (p = next;; p = next) {
        n = line_at(p, e, &next);
        if (n < 0)
            goto incomplete;
        if (n == 0)
            break;
        if (++fields > MAX_HEAD_FIELDS) {
            char msg[96];
            snprintf(msg, sizeof msg, "the request has more than %d header fields",
                     MAX_HEAD_FIELDS);
            return reject(v, 431, "header_fields_too_large", msg);
        }
        const char *colon = memchr(p, ':', (size_t)n);
        if (!colon || *p == ' ' || *p == '\t')
            continue; /* malformed or folded lines: libmicrohttpd decides */
        size_t nl = (size_t)(colon - p);
        const char *val = colon + 1, *end = p + n;
        while (val < end && (*val == ' ' || *val == '\t'))
            val++;
        while (end > val && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (nl == 4 && strncasecmp(p, "Host", 4) == 0) {
            host = 1;
        } else if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
            size_t vl = (size_t)(end - val);
            if (!ld_http_length_ok(val, vl)) {
                char msg[96];
                snprintf(msg, sizeof msg, "Content-Length '%.*s' is not a number",
                         (int)(vl < 40 ? vl : 40), val);
                return reject(v, 400, "bad_request", msg);
            }
            if (cl && (cl_len != vl || memcmp(cl, val, vl) != 0))
                return reject(v, 400, "bad_request", LD_MSG_CL_DIFFER);
            cl = val;
            cl_len = vl;
        }
    }
    if (http11 && !host)
        return reject(v, 400, "bad_request", LD_MSG_NO_HOST);
    return LD_HEAD_OK;
incomplete:
    if (len < cap)
        return LD_HEAD_INCOMPLETE;
    char msg[96];
    snprintf(msg, sizeof msg, "the request head is larger than %zu bytes", cap);
    return reject(v, 431, "header_fields_too_large", msg);
}
