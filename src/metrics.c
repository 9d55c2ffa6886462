/* metrics.c — see include/latentd/metrics.h. */
#define _POSIX_C_SOURCE 200809L
#include "latentd/metrics.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef LD_VERSION
#define LD_VERSION "0.1.0"
#endif

/* Latency buckets in seconds: inference is sub-millisecond, so the low end is fine-grained. */
static const double buckets[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                 0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5,
                                 5.0,    10.0};
#define N_BUCKETS ((int)LD_ARRAY_LEN(buckets))
#define STATUS_MIN 100
#define STATUS_MAX 599

typedef struct {
    char label[96];
    atomic_uint_fast64_t by_status[STATUS_MAX - STATUS_MIN + 1];
    atomic_uint_fast64_t bucket[N_BUCKETS + 1]; /* non-cumulative; last = +Inf */
    atomic_uint_fast64_t sum_ns;
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t bytes;
} route_stats_t;

struct ld_metrics {
    int n_routes;
    route_stats_t *routes; /* LD_METRICS_MAX_ROUTES */
    int n_collectors;
    ld_metrics_collector_fn coll_fn[LD_METRICS_MAX_COLLECTORS];
    void *coll_ctx[LD_METRICS_MAX_COLLECTORS];
    atomic_uint_fast64_t samples;
    double start_time; /* unix seconds */
};

int ld_metrics_new(ld_metrics_t **out)
{
    ld_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return LD_ENOMEM;
    /* zeroed memory is a valid initial state for these atomics; calloc'd pages
     * that are never touched cost no resident memory */
    m->routes = calloc(LD_METRICS_MAX_ROUTES, sizeof *m->routes);
    if (!m->routes) {
        free(m);
        return LD_ENOMEM;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    *out = m;
    return LD_OK;
}

void ld_metrics_free(ld_metrics_t *m)
{
    if (!m)
        return;
    free(m->routes);
    free(m);
}

int ld_metrics_route(ld_metrics_t *m, const char *route)
{
    for (int i = 0; i < m->n_routes; i++)
        if (strcmp(m->routes[i].label, route) == 0)
            return i;
    if (m->n_routes >= LD_METRICS_MAX_ROUTES || strlen(route) >= sizeof m->routes[0].label)
        return -1;
    strcpy(m->routes[m->n_routes].label, route);
    return m->n_routes++;
}

int ld_metrics_add_collector(ld_metrics_t *m, ld_metrics_collector_fn fn, void *ctx)
{
    if (m->n_collectors >= LD_METRICS_MAX_COLLECTORS)
        return -1;
    m->coll_fn[m->n_collectors] = fn;
    m->coll_ctx[m->n_collectors] = ctx;
    m->n_collectors++;
    return 0;
}

void ld_metrics_observe(ld_metrics_t *m, int route, int status, double seconds,
                        uint64_t bytes_out)
{
    if (!m || route < 0 || route >= m->n_routes)
        return;
    route_stats_t *r = &m->routes[route];
    if (status < STATUS_MIN || status > STATUS_MAX)
        status = 500; /* cannot happen with MHD; keep the table bounded */
    atomic_fetch_add_explicit(&r->by_status[status - STATUS_MIN], 1, memory_order_relaxed);
    int b = 0;
    while (b < N_BUCKETS && seconds > buckets[b])
        b++;
    atomic_fetch_add_explicit(&r->bucket[b], 1, memory_order_relaxed);
    if (seconds < 0)
        seconds = 0;
    atomic_fetch_add_explicit(&r->sum_ns, (uint_fast64_t)(seconds * 1e9), memory_order_relaxed);
    atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->bytes, bytes_out, memory_order_relaxed);
}

void ld_metrics_add_samples(ld_metrics_t *m, uint64_t n)
{
    if (m)
        atomic_fetch_add_explicit(&m->samples, n, memory_order_relaxed);
}

void ld_metrics_family(ld_buf_t *out, const char *name, const char *type, const char *help)
{
    ld_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ld_metrics_label_value(ld_buf_t *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            ld_buf_puts(out, "\\\\");
        else if (*v == '"')
            ld_buf_puts(out, "\\\"");
        else if (*v == '\n')
            ld_buf_puts(out, "\\n");
        else
            ld_buf_putc(out, *v);
    }
}

static uint64_t ld_load(atomic_uint_fast64_t *a)
{
    return (uint64_t)atomic_load_explicit(a, memory_order_relaxed);
}

static void route_label(ld_buf_t *b, const route_stats_t *r)
{
    ld_buf_puts(b, "route=\"");
    ld_metrics_label_value(b, r->label);
    ld_buf_putc(b, '"');
}

static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

char *ld_metrics_render(ld_metrics_t *m, size_t *len)
{
    ld_buf_t b = {0};

    ld_metrics_family(&b, "latentd_http_requests_total", "counter",
                      "HTTP requests answered, by route pattern and status code.");
    for (int i = 0; i < m->n_routes; i++) {
        route_stats_t *r = &m->routes[i];
        for (int s = 0; s <= STATUS_MAX - STATUS_MIN; s++) {
            uint64_t v = ld_load(&r->by_status[s]);
            if (!v)
                continue;
            ld_buf_puts(&b, "latentd_http_requests_total{");
            route_label(&b, r);
            ld_buf_printf(&b, ",code=\"%d\"} %llu\n", s + STATUS_MIN, (unsigned long long)v);
        }
    }

    ld_metrics_family(&b, "latentd_http_request_duration_seconds", "histogram",
                      "Time from the request's headers to its last response byte, by route.");
    for (int i = 0; i < m->n_routes; i++) {
        route_stats_t *r = &m->routes[i];
        uint64_t cum = 0;
        /* read the buckets first and derive the count from them, so the
         * cumulative series stays consistent while other threads observe */
        for (int k = 0; k <= N_BUCKETS; k++) {
            cum += ld_load(&r->bucket[k]);
            ld_buf_puts(&b, "latentd_http_request_duration_seconds_bucket{");
            route_label(&b, r);
            if (k < N_BUCKETS)
                ld_buf_printf(&b, ",le=\"%g\"} %llu\n", buckets[k], (unsigned long long)cum);
            else
                ld_buf_printf(&b, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        ld_buf_puts(&b, "latentd_http_request_duration_seconds_sum{");
        route_label(&b, r);
        ld_buf_printf(&b, "} %.9f\n", (double)ld_load(&r->sum_ns) * 1e-9);
        ld_buf_puts(&b, "latentd_http_request_duration_seconds_count{");
        route_label(&b, r);
        ld_buf_printf(&b, "} %llu\n", (unsigned long long)cum);
    }

    ld_metrics_family(&b, "latentd_http_response_bytes_total", "counter",
                      "Response body bytes sent, by route.");
    for (int i = 0; i < m->n_routes; i++) {
        route_stats_t *r = &m->routes[i];
        ld_buf_puts(&b, "latentd_http_response_bytes_total{");
        route_label(&b, r);
        ld_buf_printf(&b, "} %llu\n", (unsigned long long)ld_load(&r->bytes));
    }

    ld_metrics_family(&b, "latentd_samples_generated_total", "counter",
                      "Images produced by sample, decode, reconstruct and interpolate.");
    ld_buf_printf(&b, "latentd_samples_generated_total %llu\n",
                  (unsigned long long)ld_load(&m->samples));

    for (int i = 0; i < m->n_collectors; i++)
        m->coll_fn[i](&b, m->coll_ctx[i]);

    ld_metrics_family(&b, "latentd_build_info", "gauge", "Build information; always 1.");
    ld_buf_printf(&b, "latentd_build_info{version=\"%s\"} 1\n", LD_VERSION);
    long rss = rss_bytes();
    if (rss >= 0) {
        ld_metrics_family(&b, "process_resident_memory_bytes", "gauge",
                          "Resident memory size in bytes.");
        ld_buf_printf(&b, "process_resident_memory_bytes %ld\n", rss);
    }
    ld_metrics_family(&b, "process_start_time_seconds", "gauge",
                      "Start time of the process since unix epoch in seconds.");
    ld_buf_printf(&b, "process_start_time_seconds %.3f\n", m->start_time);
    return ld_buf_steal(&b, len);
}
