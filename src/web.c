/* web.c — see include/latentd/web.h.
 *
 * A served file is a web_file_t: its bytes, their gzip form when that is
 * smaller, an ETag for each form and a content type.  The embedded files are
 * turned into web_file_t once, in ld_web_new; in folder mode a file is read
 * and turned into one for each request, so an edit shows at the next reload.
 */
#define _GNU_SOURCE
#include "latentd/web.h"

#include "latentd/fsutil.h"
#include "latentd/sha256.h"
#include "web_impl.h"

#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#define WEB_FILE_MAX (16u << 20) /* a folder file larger than this is refused */
#define WEB_CSP                                                                   \
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; " \
    "form-action 'none'; frame-ancestors 'none'"

typedef struct {
    char name[72];
    const uint8_t *data;
    size_t len;
    uint8_t *gz;       /* gzip of data, or NULL when it would not be smaller */
    size_t gz_len;
    char etag[24];     /* "<16 hex digits>" with the quotes */
    char etag_gz[28];  /* "<16 hex digits>-gz" */
    const char *ctype;
    uint8_t *owned;    /* data read from a folder (freed with the file) */
} web_file_t;

typedef enum { WEB_OFF, WEB_BUILTIN, WEB_FOLDER } web_mode_t;

struct ld_web {
    web_mode_t mode;
    char *dir;          /* WEB_FOLDER */
    int n;
    web_file_t *files;  /* the embedded files, n of them */
};

static const char *content_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < LD_ARRAY_LEN(types); i++)
        if (strcasecmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

/* Fill f for data[0..len) (borrowed; f->owned may be set by the caller). */
static int file_init(web_file_t *f, const char *name, const uint8_t *data, size_t len)
{
    snprintf(f->name, sizeof f->name, "%s", name);
    f->data = data;
    f->len = len;
    f->ctype = content_type(name);
    char hex[2 * LD_SHA256_LEN + 1];
    ld_sha256_hex(data, len, hex);
    snprintf(f->etag, sizeof f->etag, "\"%.16s\"", hex);
    snprintf(f->etag_gz, sizeof f->etag_gz, "\"%.16s-gz\"", hex);
    return ld_http_gzip(data, len, Z_DEFAULT_COMPRESSION, &f->gz, &f->gz_len);
}

static void file_clear(web_file_t *f)
{
    free(f->gz);
    free(f->owned);
    memset(f, 0, sizeof *f);
}

int ld_web_new(const char *source, ld_web_t **out, ld_err_t *err)
{
    ld_web_t *w = calloc(1, sizeof *w);
    if (!w)
        return ld_err_set(err, LD_ENOMEM, "out of memory");
    /* off still loads the embedded files: /openapi.json is among them */
    if (strcmp(source, "off") == 0) {
        w->mode = WEB_OFF;
    } else if (strcmp(source, "builtin") == 0) {
        w->mode = WEB_BUILTIN;
    } else {
        struct stat st;
        if (stat(source, &st) != 0 || !S_ISDIR(st.st_mode)) {
            free(w);
            return ld_err_set(err, LD_EINVAL,
                              "web: '%s' is not a folder (use builtin, off or a folder)", source);
        }
        w->mode = WEB_FOLDER;
        if (!(w->dir = strdup(source)))
            goto oom;
    }
    /* folder mode keeps them too: a file missing from the folder (Chart.js)
     * is served from here, and /openapi.json always is */
    w->files = calloc((size_t)ld_web_n_blobs, sizeof *w->files);
    if (!w->files)
        goto oom;
    for (int i = 0; i < ld_web_n_blobs; i++, w->n++) {
        const ld_web_blob_t *b = &ld_web_blobs[i];
        if (file_init(&w->files[i], b->name, b->data, (size_t)(b->end - b->data)) != LD_OK)
            goto oom;
    }
    *out = w;
    return LD_OK;
oom:
    ld_web_free(w);
    return ld_err_set(err, LD_ENOMEM, "out of memory");
}

void ld_web_free(ld_web_t *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++)
        file_clear(&w->files[i]);
    free(w->files);
    free(w->dir);
    free(w);
}

/* ------------------------------------------------------------ requests */

static void reply_file(ld_req_t *req, const web_file_t *f)
{
    int gz = f->gz && ld_http_accepts_gzip(ld_req_header(req, "Accept-Encoding"));
    ld_req_header_add(req, "Vary", "Accept-Encoding");
    ld_req_header_add(req, "Content-Security-Policy", WEB_CSP);
    if (ld_req_conditional(req, gz ? f->etag_gz : f->etag, "no-cache"))
        return;
    if (gz)
        ld_req_header_add(req, "Content-Encoding", "gzip");
    ld_req_reply_copy(req, 200, f->ctype, gz ? f->gz : f->data, gz ? f->gz_len : f->len);
}

static const web_file_t *builtin_file(const ld_web_t *w, const char *name)
{
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->files[i].name, name) == 0)
            return &w->files[i];
    return NULL;
}

static void serve_name(ld_req_t *req, const ld_web_t *w, const char *name)
{
    if (!ld_name_is_safe(name)) {
        ld_req_error(req, 404, "not_found", "no file named '%.80s' in the web page", name);
        return;
    }
    if (w->mode == WEB_FOLDER) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", w->dir, name);
        web_file_t f;
        memset(&f, 0, sizeof f);
        uint8_t *data;
        size_t len;
        ld_err_t e;
        int rc = ld_read_file(path, WEB_FILE_MAX, &data, &len, &e);
        if (rc == LD_OK) {
            f.owned = data;
            if (file_init(&f, name, data, len) != LD_OK)
                ld_req_error(req, 503, "overloaded", "out of memory");
            else
                reply_file(req, &f);
            file_clear(&f);
            return;
        }
        if (rc != LD_ENOTFOUND) {
            ld_req_error(req, 500, "internal", "web: %s", e.msg);
            return;
        }
    }
    const web_file_t *f = builtin_file(w, name);
    if (f)
        reply_file(req, f);
    else
        ld_req_error(req, 404, "not_found", "no file named '%s' in the web page", name);
}

static void h_index(ld_req_t *req, void *ctx)
{
    serve_name(req, ctx, "index.html");
}

static void h_file(ld_req_t *req, void *ctx)
{
    serve_name(req, ctx, ld_req_param(req, "file"));
}

/* The API's description: always the embedded one (the binary's own routes),
 * whatever the page's source. */
static void h_openapi(ld_req_t *req, void *ctx)
{
    const web_file_t *f = builtin_file(ctx, LD_WEB_OPENAPI);
    if (f)
        reply_file(req, f);
    else
        ld_req_error(req, 404, "not_found", "this build has no " LD_WEB_OPENAPI);
}

int ld_web_register(ld_web_t *w, ld_http_t *h, ld_err_t *err)
{
    const ld_route_t routes[] = {
        {"GET", "/openapi.json", LD_AUTH_NONE, 0, h_openapi, w},
        {"GET", "/", LD_AUTH_NONE, 0, h_index, w},
        {"GET", "/ui/{file}", LD_AUTH_NONE, 0, h_file, w},
    };
    /* the page's routes only when it is on */
    size_t n = w->mode == WEB_OFF ? 1 : LD_ARRAY_LEN(routes);
    for (size_t i = 0; i < n; i++) {
        int rc = ld_http_route_add(h, &routes[i], err);
        if (rc != LD_OK)
            return rc;
    }
    return LD_OK;
}
