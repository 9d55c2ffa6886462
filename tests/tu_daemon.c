/* tu_daemon.c — a real latentd daemon and HTTP for the Check suites; see
 * tu_daemon.h for what it owns and its threading rules. */
#define _GNU_SOURCE
#include "tu_daemon.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ time, files */

void tu_msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

double tu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int tu_under_asan(void)
{
    return strstr(LD_BIN, "asan") != NULL;
}

double tu_deadline(double secs, double asan_factor)
{
    return tu_now() + secs * (tu_under_asan() ? asan_factor : 1);
}

void tu_daemon_start_shipped(tu_daemon_t *d, double asan_factor, const char *const *models,
                             const char *extra_conf)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tu_daemon_dirs(d, asan_factor);
    char from[512], to[1024], text[4096];
    for (int i = 0; models[i]; i++) {
        snprintf(from, sizeof from, "models/%s.safetensors", models[i]);
        snprintf(to, sizeof to, "%s/%s.safetensors", d->models, models[i]);
        tu_copy_file(from, to);
    }
    snprintf(text, sizeof text,
             "bind = 127.0.0.1\nport = 0\nhttp_threads = 2\nmodels_dir = %s\nstate_dir = %s\n"
             "max_samples = 64\n%s",
             d->models, d->state, extra_conf ? extra_conf : "");
    tu_write_file(d->conf, text);
    tu_daemon_start(d, NULL);
}

void tu_copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    ck_assert_msg(in && out, "copy %s -> %s", from, to);
    char buf[65536];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0)
        ck_assert(fwrite(buf, 1, k, out) == k);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

void tu_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
    chmod(path, 0600);
}

char *tu_read_text(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    ld_buf_t b = {0};
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        ld_buf_append(&b, tmp, n);
    fclose(f);
    char *s = ld_buf_steal(&b, NULL);
    return s ? s : strdup("");
}

/* ------------------------------------------------------------ daemons */

void tu_daemon_dirs(tu_daemon_t *d, double asan_factor)
{
    memset(d, 0, sizeof *d);
    d->asan_factor = asan_factor;
    d->dir = tu_mkdtemp();
    snprintf(d->models, sizeof d->models, "%s/models", d->dir);
    snprintf(d->state, sizeof d->state, "%s/state", d->dir);
    snprintf(d->data, sizeof d->data, "%s/data", d->dir);
    snprintf(d->log, sizeof d->log, "%s/daemon.log", d->dir);
    snprintf(d->status, sizeof d->status, "%s/status", d->dir);
    snprintf(d->conf, sizeof d->conf, "%s/latentd.conf", d->dir);
    ck_assert_int_eq(mkdir(d->models, 0755), 0);
    ck_assert_int_eq(mkdir(d->data, 0755), 0);
}

void tu_daemon_spawn(tu_daemon_t *d, const char *const *args, const char *extra_env)
{
    const char *const serve[] = {"serve", "--config", d->conf, NULL};
    if (!args)
        args = serve;
    /* a restart: keep the previous run's log aside, so that wait_port cannot
     * read the old port from it before the new daemon truncates it */
    char prev[600];
    snprintf(prev, sizeof prev, "%s.prev", d->log);
    rename(d->log, prev);
    unlink(d->status);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t mon = fork();
    ck_assert_int_ge(mon, 0);
    if (mon == 0) {
        /* a test that fails ends its process at once: its daemon (and the
         * job training in it) must not outlive it */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(pfd[0]);
        pid_t p = fork();
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            if (extra_env)
                putenv((char *)extra_env);
            char *argv[64];
            int n = 0;
            argv[n++] = (char *)LD_BIN;
            for (int i = 0; args[i] && n < 62; i++)
                argv[n++] = (char *)args[i];
            argv[n] = NULL;
            execv(LD_BIN, argv);
            _exit(127);
        }
        ssize_t w = write(pfd[1], &p, sizeof p);
        (void)w;
        close(pfd[1]);
        int st = 0;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR)
            ;
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", d->status);
        FILE *f = fopen(tmp, "w");
        if (f) {
            fprintf(f, "%d %d %d\n", WIFEXITED(st) ? 1 : 0,
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), st);
            fclose(f);
            rename(tmp, d->status);
        }
        _exit(0);
    }
    close(pfd[1]);
    pid_t p = 0;
    ck_assert_int_eq(read(pfd[0], &p, sizeof p), (ssize_t)sizeof p);
    close(pfd[0]);
    d->pid = p;
    d->monitor = mon;
}

int tu_daemon_wait_exit(tu_daemon_t *d, double secs)
{
    double until = tu_deadline(secs, d->asan_factor);
    while (access(d->status, F_OK) != 0) {
        if (tu_now() > until) {
            kill(d->pid, SIGKILL);
            ck_abort_msg("daemon %d did not exit within %.0f s", (int)d->pid, secs);
        }
        tu_msleep(10);
    }
    int exited = 0, code = 0, raw = 0;
    FILE *f = fopen(d->status, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fscanf(f, "%d %d %d", &exited, &code, &raw), 3);
    fclose(f);
    waitpid(d->monitor, NULL, 0);
    return exited ? code : 128 + code;
}

int tu_daemon_wait_port(tu_daemon_t *d, double secs)
{
    static const char key[] = "listening on http://127.0.0.1:";
    double until = tu_deadline(secs, d->asan_factor);
    for (;;) {
        char *log = tu_read_text(d->log);
        char *p = strstr(log, key);
        int port = p ? atoi(p + strlen(key)) : 0;
        int exited = access(d->status, F_OK) == 0;
        if (port > 0 || exited || tu_now() > until) {
            ck_assert_msg(port > 0, "daemon did not start; log:\n%s", log);
            free(log);
            return port;
        }
        free(log);
        tu_msleep(10);
    }
}

void tu_daemon_wait_ready(const tu_daemon_t *d, double secs)
{
    double until = tu_deadline(secs, d->asan_factor);
    for (;;) {
        tu_resp_t r;
        tu_req_t q = {.token = "", .port = d->port};
        CURL *c = curl_easy_init();
        long s = tu_http(c, &r, "GET", "/readyz", NULL, 0, &q);
        curl_easy_cleanup(c);
        tu_resp_free(&r);
        if (s == 200)
            return;
        ck_assert_msg(tu_now() < until, "daemon on port %d never became ready", d->port);
        tu_msleep(10);
    }
}

void tu_daemon_start(tu_daemon_t *d, const char *extra_env)
{
    tu_daemon_spawn(d, NULL, extra_env);
    d->port = tu_daemon_wait_port(d, 30);
    tu_daemon_wait_ready(d, 30);
}

int tu_daemon_stop(tu_daemon_t *d, double secs)
{
    if (access(d->status, F_OK) == 0)
        return tu_daemon_wait_exit(d, 1);
    ck_assert_int_gt(d->pid, 0); /* kill(0, ...) would signal the whole group */
    kill(d->pid, SIGTERM);
    return tu_daemon_wait_exit(d, secs);
}

void tu_daemon_free(tu_daemon_t *d)
{
    if (d->dir) {
        tu_rmrf(d->dir);
        free(d->dir);
        d->dir = NULL;
    }
}

void tu_daemon_teardown(tu_daemon_t *d, double secs)
{
    if (d->pid > 0)
        tu_daemon_stop(d, secs);
    tu_daemon_free(d);
}

void tu_daemon_stop_ok(tu_daemon_t *d, double secs)
{
    int code = tu_daemon_stop(d, secs);
    ck_assert_msg(code == 0, "daemon exit %d; log tail:\n%s", code, tu_log_tail(d));
    tu_daemon_free(d);
}

const char *tu_log_tail(const tu_daemon_t *d)
{
    static char tail[4001];
    char *log = tu_read_text(d->log);
    size_t n = strlen(log);
    snprintf(tail, sizeof tail, "%s", n > 4000 ? log + n - 4000 : log);
    free(log);
    return tail;
}

/* ------------------------------------------------------------ HTTP */

static size_t on_body(char *p, size_t s, size_t n, void *ud)
{
    ld_buf_append(ud, p, s * n);
    return s * n;
}

void tu_resp_free(tu_resp_t *r)
{
    ld_buf_free(&r->body);
    ld_buf_free(&r->hdrs);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

const char *tu_hdr(const tu_resp_t *r, const char *name, char *out, size_t cap)
{
    const char *found = NULL;
    size_t nl = strlen(name);
    const char *p = r->hdrs.data;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(eol - v), v);
            found = out;
        }
        p = eol + 2;
    }
    return found;
}

#define CONTRACT_KEEP 8 /* numbers kept from the head of a long array (see below) */

/* Shorten, in j, every array of more than CONTRACT_KEEP + 2 numbers (image
 * rows, latents) to its first CONTRACT_KEEP numbers, its smallest and its
 * largest: a schema's checks on each item (type, range) see the same
 * extremes, and the record stays small (a suite run gets hundreds of MB of
 * pixels otherwise).  The document bounds no array of numbers to a length
 * above CONTRACT_KEEP + 2. */
static void contract_shorten(cJSON *j)
{
    int n = 0, numbers = 1;
    for (cJSON *c = j->child; c; c = c->next, n++) {
        numbers &= cJSON_IsNumber(c) != 0;
        contract_shorten(c);
    }
    if (!cJSON_IsArray(j) || !numbers || n <= CONTRACT_KEEP + 2)
        return;
    double lo = j->child->valuedouble, hi = lo;
    for (cJSON *c = j->child; c; c = c->next) {
        lo = c->valuedouble < lo ? c->valuedouble : lo;
        hi = c->valuedouble > hi ? c->valuedouble : hi;
    }
    while (cJSON_GetArraySize(j) > CONTRACT_KEEP)
        cJSON_DeleteItemFromArray(j, CONTRACT_KEEP);
    cJSON_AddItemToArray(j, cJSON_CreateNumber(lo));
    cJSON_AddItemToArray(j, cJSON_CreateNumber(hi));
}

/* The header lines of r's last response (a 1xx or redirect before it is
 * dropped) as an object of lower-case names; a repeated name keeps its last
 * value. */
static cJSON *contract_headers(const tu_resp_t *r)
{
    cJSON *o = cJSON_CreateObject();
    ck_assert_ptr_nonnull(o);
    for (const char *p = r->hdrs.data, *eol; p && (eol = strstr(p, "\r\n")); p = eol + 2) {
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (strncmp(p, "HTTP/", 5) == 0) {
            cJSON_Delete(o);
            o = cJSON_CreateObject();
            ck_assert_ptr_nonnull(o);
        } else if (colon && colon > p) {
            char name[128], value[1024];
            const char *v = colon + 1;
            while (v < eol && *v == ' ')
                v++;
            snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
            for (char *c = name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            snprintf(value, sizeof value, "%.*s", (int)(eol - v), v);
            cJSON_DeleteItemFromObjectCaseSensitive(o, name);
            cJSON_AddStringToObject(o, name, value);
        }
    }
    return o;
}

/* With LD_CONTRACT_LOG=FILE set, each response is appended to FILE as one
 * JSON line {"method","path","status","ctype","length","headers","body"}
 * (headers: contract_headers; body: the parsed JSON body with long arrays of
 * numbers shortened, or null when there is none or it is not JSON), for
 * tests/contract/contract.py to validate against docs/openapi.json.  One
 * write() per line on an O_APPEND descriptor: the forked tests and their
 * threads append whole lines. */
static void contract_record(CURL *c, const char *method, const char *path, const tu_resp_t *r)
{
    const char *file = getenv("LD_CONTRACT_LOG");
    if (!file || !*file)
        return;
    const char *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", method);
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddNumberToObject(o, "status", (double)r->status);
    if (ctype)
        cJSON_AddStringToObject(o, "ctype", ctype);
    else
        cJSON_AddNullToObject(o, "ctype");
    cJSON_AddNumberToObject(o, "length", (double)r->body.len);
    cJSON_AddItemToObject(o, "headers", contract_headers(r));
    cJSON *body = r->json ? cJSON_Duplicate(r->json, 1) : cJSON_CreateNull();
    ck_assert_ptr_nonnull(body);
    contract_shorten(body);
    cJSON_AddItemToObject(o, "body", body);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    ck_assert_ptr_nonnull(line);
    size_t n = strlen(line);
    line[n] = '\n'; /* over the NUL: write() takes the length */
    int fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    ck_assert_msg(fd >= 0, "LD_CONTRACT_LOG=%s: %s", file, strerror(errno));
    ssize_t w = write(fd, line, n + 1);
    close(fd);
    free(line);
    ck_assert_msg(w == (ssize_t)(n + 1), "LD_CONTRACT_LOG=%s: short write", file);
}

long tu_http(CURL *c, tu_resp_t *r, const char *method, const char *path, const void *body,
             size_t len, const tu_req_t *q)
{
    memset(r, 0, sizeof *r);
    char url[1024];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", q->port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r->hdrs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, q->timeout_ms > 0 ? q->timeout_ms : 60000L);
    struct curl_slist *h = NULL;
    char line[512];
    if (q->token && *q->token) {
        snprintf(line, sizeof line, "Authorization: Bearer %s", q->token);
        h = curl_slist_append(h, line);
    }
    if (body) {
        snprintf(line, sizeof line, "Content-Type: %s", q->ctype ? q->ctype : "application/json");
        h = curl_slist_append(h, line);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    } else {
        /* no body: a plain request with the method's name (HTTPGET resets a
         * reused handle; setting it to 0 would make curl upload chunks) */
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_NOBODY, strcmp(method, "HEAD") == 0 ? 1L : 0L);
    }
    if (q->origin) {
        snprintf(line, sizeof line, "Origin: %s", q->origin);
        h = curl_slist_append(h, line);
    }
    if (q->extra)
        h = curl_slist_append(h, q->extra);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        r->status = -1;
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    if (r->body.len)
        r->json = cJSON_ParseWithLength(r->body.data, r->body.len);
    contract_record(c, method, path, r);
    return r->status;
}

long tu_http_once(tu_resp_t *r, const char *method, const char *path, const void *body,
                  size_t len, const tu_req_t *q)
{
    CURL *c = curl_easy_init();
    ck_assert_ptr_nonnull(c);
    long s = tu_http(c, r, method, path, body, len, q);
    curl_easy_cleanup(c);
    ck_assert_msg(s > 0, "%s %s: no HTTP response", method, path);
    return s;
}

ld_dataset_t *tu_fashion_test(int n)
{
    ld_dataset_t *d = NULL;
    ld_err_t e;
    ck_assert_msg(ld_data_load("fashion-mnist", LD_SPLIT_TEST, n, &d, &e) == LD_OK,
                  "fashion-mnist: %s", e.msg);
    return d;
}

char *tu_base64(const uint8_t *p, size_t n)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        o[k++] = t[v >> 18 & 63];
        o[k++] = t[v >> 12 & 63];
        o[k++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        o[k++] = i + 2 < n ? t[v & 63] : '=';
    }
    o[k] = '\0';
    return o;
}

void *tu_sampler_run(void *arg)
{
    tu_sampler_t *a = arg;
    CURL *c = curl_easy_init();
    tu_req_t q = {.token = a->token, .port = a->port};
    unsigned seed = 0;
    while (!atomic_load(a->stop)) {
        char body[96];
        snprintf(body, sizeof body, "{\"n\":%d,\"seed\":%u%s}", a->n, seed++ % 50,
                 a->png ? ",\"format\":\"png\"" : "");
        tu_resp_t r;
        long s = tu_http(c, &r, "POST", a->path, body, strlen(body), &q);
        int good = a->png ? r.body.data && r.body.len > 8 && !memcmp(r.body.data, "\x89PNG", 4)
                          : r.json && tu_json_all_finite(r.json);
        if (s >= 200 && s < 300 && good) {
            a->ok++;
        } else {
            if (!a->bad)
                snprintf(a->bad_body, sizeof a->bad_body, "%s", r.body.data ? r.body.data : "");
            a->bad++;
            a->last_bad = s;
        }
        tu_resp_free(&r);
        if (a->pause_ms > 0)
            tu_msleep(a->pause_ms);
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* ------------------------------------------------------------ JSON */

const cJSON *tu_jget(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "missing field %s", k);
    return v;
}

int tu_json_all_finite(const cJSON *j)
{
    for (; j; j = j->next) {
        if (cJSON_IsNumber(j) && !isfinite(j->valuedouble))
            return 0;
        if (j->child && !tu_json_all_finite(j->child))
            return 0;
    }
    return 1;
}

void tu_expect_error(const tu_resp_t *r, long status, const char *code, const char *want_msg,
                     const char *what, int exact)
{
    ck_assert_msg(r->status == status, "%s: status %ld, want %ld; body %s", what, r->status, status,
                  r->body.data ? r->body.data : "");
    if (exact) {
        char ct[128];
        ck_assert_msg(tu_hdr(r, "Content-Type", ct, sizeof ct) &&
                          strcmp(ct, "application/json") == 0,
                      "%s: error content type", what);
    }
    ck_assert_msg(r->json != NULL, "%s: error body is not JSON: %s", what, r->body.data);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "code");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");
    ck_assert_msg(cJSON_IsString(c) && cJSON_IsString(m) && *m->valuestring,
                  "%s: malformed error body %s", what, r->body.data);
    ck_assert_msg(strcmp(c->valuestring, code) == 0, "%s: code %s, want %s (%s)", what,
                  c->valuestring, code, m->valuestring);
    if (want_msg)
        ck_assert_msg(strstr(m->valuestring, want_msg), "%s: message '%s' lacks '%s'", what,
                      m->valuestring, want_msg);
    /* the request id: in the body, and the same in the X-Request-Id header */
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "request_id");
    char hid[160];
    ck_assert_msg(cJSON_IsString(id) && *id->valuestring, "%s: no request_id in %s", what,
                  r->body.data);
    ck_assert_msg(tu_hdr(r, "X-Request-Id", hid, sizeof hid) && strcmp(hid, id->valuestring) == 0,
                  "%s: X-Request-Id %s, body's request_id %s", what, hid, id->valuestring);
    if (exact) {
        ck_assert_int_eq(cJSON_GetArraySize(r->json), 1);
        ck_assert_int_eq(cJSON_GetArraySize(e), 3);
    }
}

long long tu_body_memory(const tu_daemon_t *d, const char *token)
{
    static const char key[] = "\nlatentd_http_body_memory_bytes ";
    tu_req_t q = {.token = token, .port = d->port};
    tu_resp_t r;
    ck_assert_int_eq(tu_http_once(&r, "GET", "/metrics", NULL, 0, &q), 200);
    const char *p = strstr(r.body.data, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    tu_resp_free(&r);
    return v;
}

void tu_hold_bodies(const tu_daemon_t *d, const char *path, const char *token, size_t body_len,
                    int n, int *fds)
{
    char head[1024], auth[600] = "";
    if (token && *token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
    snprintf(head, sizeof head,
             "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n{",
             path, auth, body_len);
    for (int i = 0; i < n; i++) {
        fds[i] = tu_tcp_connect(1, d->port, 1);
        ck_assert_int_ge(fds[i], 0);
        tu_send_all(fds[i], head, strlen(head));
    }
    double until = tu_deadline(10, d->asan_factor);
    while (tu_body_memory(d, token) < (long long)n * (long long)body_len) {
        ck_assert_msg(tu_now() < until, "uploads were not all accounted for");
        tu_msleep(5);
    }
}

void tu_release_bodies(const tu_daemon_t *d, const char *token, int n, const int *fds)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
    double until = tu_deadline(10, d->asan_factor);
    while (tu_body_memory(d, token) != 0) {
        ck_assert_msg(tu_now() < until, "abandoned uploads were not released");
        tu_msleep(5);
    }
}

void tu_promtool_check(const tu_daemon_t *d, const char *text, size_t len)
{
    ck_assert_msg(access("/usr/bin/promtool", X_OK) == 0,
                  "promtool missing: run `make deps` (Debian package prometheus)");
    char path[600], cmd[2048];
    snprintf(path, sizeof path, "%s/metrics.txt", d->dir);
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    fwrite(text, 1, len, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < '%s' > '%s.out' 2>&1", path,
             path);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "%s.out", path);
    char *out = tu_read_text(cmd);
    ck_assert_msg(rc == 0, "promtool check metrics failed:\n%s", out);
    free(out);
}

/* ------------------------------------------------------------ fixtures */

void tu_curl_setup(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void tu_curl_teardown(void)
{
    curl_global_cleanup();
}

static double t_test_start;

void tu_timing_start(void)
{
    t_test_start = tu_now();
}

void tu_timing_end(const char *suite)
{
    if (getenv("LD_TEST_TIMING"))
        fprintf(stderr, "%s test took %.2f s\n", suite, tu_now() - t_test_start);
}

/* ------------------------------------------------------------ raw sockets */

/* A TCP connection from 127.0.0.<host> to 127.0.0.1:port.  block: wait for
 * the handshake (with a receive timeout of 30 s); otherwise the connect is
 * started and left in progress.  -1 if it fails at once. */
int tu_tcp_connect(int host, int port, int block)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (block ? 0 : SOCK_NONBLOCK), 0);
    ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)host);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    if (block) {
        struct timeval tv = {30, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    return fd;
}

void tu_send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w <= 0)
            return; /* the server may close on garbage: the reply tells */
        c += w;
        n -= (size_t)w;
    }
}

/* Read one HTTP response (head + Content-Length body) into b; its status, or
 * -1 when the connection ends (or times out) before a status line. */
int tu_read_response(int fd, ld_buf_t *b)
{
    char tmp[4096];
    for (;;) {
        char *end = b->data ? strstr(b->data, "\r\n\r\n") : NULL;
        if (end) {
            char *cl = strcasestr(b->data, "\r\nContent-Length:");
            size_t need = (size_t)(end + 4 - b->data) +
                          (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
            if (b->len >= need)
                return atoi(b->data + 9);
        }
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0)
            return b->data && strncmp(b->data, "HTTP/1.", 7) == 0 ? atoi(b->data + 9) : -1;
        ld_buf_append(b, tmp, (size_t)n);
    }
}
