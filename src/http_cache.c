/* http_cache.c — content negotiation and conditional requests: the gzip
 * encoder and the Accept-Encoding / If-None-Match parsers that the HTTP
 * layer (JSON answers, seeded sample.png) and the web page's files share.
 * See http.h.  Pure functions: any thread.
 */
#include "latentd/http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

int ld_http_gzip(const void *data, size_t len, int level, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    /* 15 + 16: a gzip header and trailer around the deflate stream */
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return LD_ENOMEM;
    uLong cap = deflateBound(&zs, (uLong)len);
    uint8_t *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&zs);
        return LD_ENOMEM;
    }
    zs.next_in = (Bytef *)(uintptr_t)data;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)cap;
    int rc = deflate(&zs, Z_FINISH);
    size_t n = cap - zs.avail_out;
    deflateEnd(&zs);
    if (rc != Z_STREAM_END || n >= len) {
        free(buf);
        return LD_OK;
    }
    *out = buf;
    *out_len = n;
    return LD_OK;
}

/* Skip spaces and tabs. */
static const char *ws(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

int ld_http_accepts_gzip(const char *ae)
{
    int star = 0;
    for (const char *p = ae; p && *p;) {
        p = ws(p);
        size_t n = strcspn(p, ",; \t");
        double q = 1.0;
        const char *e = p + n;
        for (e = ws(e); *e == ';'; e = ws(e)) {
            e = ws(e + 1);
            if ((e[0] == 'q' || e[0] == 'Q') && e[1] == '=')
                q = strtod(e + 2, NULL);
            e += strcspn(e, ",;");
        }
        if ((n == 4 && strncasecmp(p, "gzip", 4) == 0) ||
            (n == 6 && strncasecmp(p, "x-gzip", 6) == 0))
            return q > 0;
        if (n == 1 && *p == '*')
            star = q > 0;
        p = *e == ',' ? e + 1 : e + strlen(e);
    }
    return star;
}

int ld_http_etag_matches(const char *inm, const char *etag)
{
    size_t el = strlen(etag);
    for (const char *p = inm; p && *p;) {
        p = ws(p);
        if (*p == '*')
            return 1;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        size_t n = strcspn(p, ", \t");
        if (n == el && memcmp(p, etag, el) == 0)
            return 1;
        p += n;
        p += strspn(p, ", \t");
    }
    return 0;
}

int ld_req_conditional(ld_req_t *req, const char *etag, const char *cache_control)
{
    ld_req_header_add(req, "ETag", etag);
    ld_req_header_add(req, "Cache-Control", cache_control);
    const char *inm = ld_req_header(req, "If-None-Match");
    if (!inm || !ld_http_etag_matches(inm, etag))
        return 0;
    ld_req_reply(req, 304, NULL, NULL, 0);
    return 1;
}
