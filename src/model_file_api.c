/* model_file_api.c — model upload and download. See model_file_api.h. */
#define _POSIX_C_SOURCE 200809L
#include "model_file_api.h"

#include "api_impl.h"
#include "latentd/fsutil.h"
#include "latentd/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SUFFIX ".safetensors"

typedef struct {
    ld_body_sink_t base; /* first: the sink is the upload */
    int fd;              /* the temporary file, -1 once closed */
    char *tmp;           /* its path; NULL once installed (renamed) */
} upload_t;

static const char *const no_yes[] = {"false", "true", NULL};

/* ?allow_kind_change=true|false into *allow; 0, or -1 answered. */
static int upload_args(ld_req_t *req, int *allow)
{
    static const char *const fields[] = {"allow_kind_change", NULL};
    ld_args_t q = ld_args_query(req);
    return ld_arg_fields(&q, fields) != 0 ||
                   ld_arg_enum(&q, "allow_kind_change", no_yes, 0, allow) != 0
               ? -1
               : 0;
}

static int upload_write(ld_body_sink_t *sink, ld_req_t *req, const void *data, size_t n)
{
    upload_t *u = (upload_t *)sink;
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(u->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            int full = e == ENOSPC || e == EDQUOT;
            ld_req_error(req, full ? 507 : 500, full ? "insufficient_storage" : "io_error",
                         "cannot write the upload to the model folder: %s", strerror(e));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void upload_close(ld_body_sink_t *sink)
{
    upload_t *u = (upload_t *)sink;
    if (u->fd >= 0)
        close(u->fd);
    if (u->tmp && unlink(u->tmp) != 0 && errno != ENOENT)
        ld_log_warn("upload not removed file=%s reason=\"%s\"", u->tmp, strerror(errno));
    free(u->tmp);
    free(u);
}

static ld_body_sink_t *upload_open(ld_req_t *req, void *ctx, long long content_length)
{
    ld_api_t *api = ctx;
    const char *name = ld_req_param(req, "name");
    int allow;
    if (!ld_name_is_safe(name)) {
        ld_req_error(req, 400, "invalid_name",
                     "model name '%.80s' must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", name);
        return NULL;
    }
    if (upload_args(req, &allow) != 0) /* refused before a byte is written */
        return NULL;
    upload_t *u = calloc(1, sizeof *u);
    if (!u) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return NULL;
    }
    u->base.write = upload_write;
    u->base.close = upload_close;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s" SUFFIX, ld_registry_dir(ld_api_registry(api)), name);
    ld_err_t e;
    if (ld_tmp_create(path, &u->fd, &u->tmp, &e) != LD_OK) {
        free(u);
        ld_req_error(req, 500, "io_error", "%s", e.msg);
        return NULL;
    }
    /* the announced size, reserved now: a full disk is 507 before any byte */
    int rc = content_length > 0 ? posix_fallocate(u->fd, 0, (off_t)content_length) : 0;
    if (rc == ENOSPC || rc == EDQUOT) {
        upload_close(&u->base);
        ld_req_error(req, 507, "insufficient_storage",
                     "no room for a %lld-byte upload in the model folder", content_length);
        return NULL;
    }
    return &u->base;
}

/* An install on a thread of its own, so that the HTTP thread goes on with
 * its other connections while the file is synced, read and hashed.  The
 * request is suspended meanwhile (ld_req_await) and cannot end, so its
 * sink and temporary file outlive the thread's use of them. */
typedef struct {
    ld_req_t *req;
    ld_registry_t *reg;
    upload_t *u;
    char name[LD_MODEL_NAME_MAX + 1];
    int allow, rc, replaced;
    ld_served_t *s; /* the new model's reference on success */
    ld_err_t e;
} install_t;

static void *install_run(void *arg)
{
    install_t *j = arg;
    upload_t *u = j->u;
    int rc = fsync(u->fd), saved = errno;
    if (close(u->fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    u->fd = -1;
    if (rc != 0) {
        j->rc = ld_err_set(&j->e, LD_EIO, "cannot fsync the upload: %s", strerror(saved));
    } else {
        const char *base = strrchr(u->tmp, '/');
        j->rc = ld_registry_install(j->reg, j->name, base ? base + 1 : u->tmp, j->allow,
                                    &j->replaced, &j->s, &j->e);
        if (j->rc == LD_OK) { /* renamed: nothing left to remove */
            free(u->tmp);
            u->tmp = NULL;
        }
    }
    ld_req_wake(j->req); /* last: the continuation may free j at once */
    return NULL;
}

/* Back on the HTTP thread (req NULL: the client went away meanwhile). */
static void install_reply(ld_req_t *req, void *ctx)
{
    install_t *j = ctx;
    if (req)
        ld_api_reply_put(req, j->rc, j->replaced, j->s, &j->e);
    else
        ld_served_release(j->s);
    free(j);
}

/* The body is in: make it durable, then install it (model_file_api.h). */
static void upload_done(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    int allow;
    if (upload_args(req, &allow) != 0)
        return;
    install_t *j = calloc(1, sizeof *j);
    if (!j) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return;
    }
    j->req = req;
    j->reg = ld_api_registry(api);
    j->u = (upload_t *)ld_req_sink(req);
    j->allow = allow;
    snprintf(j->name, sizeof j->name, "%s", ld_req_param(req, "name"));
    pthread_t t;
    pthread_attr_t at;
    int started = pthread_attr_init(&at) == 0;
    if (started) {
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        started = pthread_create(&t, &at, install_run, j) == 0;
        pthread_attr_destroy(&at);
    }
    if (!started)
        install_run(j); /* no thread to be had: here, then (the wake comes first) */
    ld_req_await(req, install_reply, j);
}

ld_stream_t ld_model_upload_stream(size_t max_upload)
{
    return (ld_stream_t){.content_type = "application/octet-stream",
                         .max_body = max_upload,
                         .limit_name = "max_upload_bytes",
                         .open = upload_open,
                         .fn = upload_done};
}

/* Whether an If-None-Match value (a list of entity tags, or "*") holds
 * etag; weak tags (W/"...") compare by their opaque part (RFC 9110 8.8.3.2). */
static int etag_listed(const char *list, const char *etag)
{
    size_t el = strlen(etag);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return 1;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *end = p;
        while (*end && *end != ',' && *end != ' ' && *end != '\t')
            end++;
        if ((size_t)(end - p) == el && memcmp(p, etag, el) == 0)
            return 1;
        p = end;
    }
    return 0;
}

void ld_model_file_handler(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    ld_args_t q = ld_args_query(req);
    if (ld_arg_fields(&q, NULL) != 0)
        return;
    ld_served_t *s = ld_api_get_model(req, ld_api_registry(api));
    if (!s)
        return;
    char etag[80], disp[LD_MODEL_NAME_MAX + 64];
    snprintf(etag, sizeof etag, "\"%s\"", s->sha256);
    ld_req_header_add(req, "ETag", etag);
    const char *inm = ld_req_header(req, "If-None-Match");
    if (inm && etag_listed(inm, etag)) {
        ld_req_reply(req, 304, NULL, NULL, 0);
        goto done;
    }
    char *path = NULL;
    ld_err_t e;
    int fd = -1;
    struct stat st;
    if (ld_resolve_inside(ld_registry_dir(ld_api_registry(api)), s->file, &path, &e) == LD_OK)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    /* the bytes sent must be the ones the ETag names: the file loaded, not
     * one edited in place since (a rename gives a new inode) */
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_ino != s->file_ino ||
        (uint64_t)st.st_size != s->file_size || st.st_mtim.tv_sec != s->file_mtime.tv_sec ||
        st.st_mtim.tv_nsec != s->file_mtime.tv_nsec) {
        if (fd >= 0)
            close(fd);
        ld_req_error(req, 409, "file_changed",
                     "the file of model '%s' (%s) changed on disk since it was loaded; "
                     "rescan the folder (SIGHUP) or PUT the model again",
                     s->name, s->file);
        goto done;
    }
    snprintf(disp, sizeof disp, "attachment; filename=\"%s" SUFFIX "\"", s->name);
    ld_req_header_add(req, "Content-Disposition", disp);
    ld_req_reply_fd(req, 200, "application/octet-stream", fd, (uint64_t)st.st_size);
done:
    ld_served_release(s);
}
