/* metrics.h — counters and histograms for GET /metrics (Prometheus text
 * exposition format 0.0.4; checked with `promtool check metrics`).
 *
 * Built-in families:
 *   latentd_http_requests_total{route,code}           counter
 *   latentd_http_request_duration_seconds{route}      histogram
 *   latentd_http_response_bytes_total{route}          counter
 *   latentd_samples_generated_total                   counter (images produced)
 *   process_resident_memory_bytes, process_start_time_seconds, latentd_build_info
 * Other modules add their own families through collectors (the registry its
 * model gauges, the HTTP layer its connection gauges, the jobs module its job
 * gauges): a collector appends complete families (# HELP, # TYPE, samples) to
 * the exposition each time it is rendered.
 *
 * Thread-safety: routes and collectors are added before serving starts (not
 * thread-safe); observing and rendering are lock-free (relaxed atomics) and
 * may run on any thread at once.
 */
#ifndef LATENTD_METRICS_H
#define LATENTD_METRICS_H

#include "latentd/buf.h"
#include "latentd/common.h"

#define LD_METRICS_MAX_ROUTES 64
#define LD_METRICS_MAX_COLLECTORS 16

typedef struct ld_metrics ld_metrics_t;

/* Appends complete metric families to out. Called on the thread rendering
 * /metrics, concurrently with everything else: it must only read state that is
 * safe to read (atomics, or data under the owner's own lock). */
typedef void (*ld_metrics_collector_fn)(ld_buf_t *out, void *ctx);

/* *out owned by the caller (ld_metrics_free). LD_ENOMEM on failure. */
int ld_metrics_new(ld_metrics_t **out);
void ld_metrics_free(ld_metrics_t *m);

/* Register a route label (e.g. "/v1/models/{name}/sample"); returns its index
 * for ld_metrics_observe, or -1 when the table is full. Same label twice
 * returns the same index. Setup time only. */
int ld_metrics_route(ld_metrics_t *m, const char *route);
/* Append a collector (setup time only); -1 when the table is full. */
int ld_metrics_add_collector(ld_metrics_t *m, ld_metrics_collector_fn fn, void *ctx);

/* Count one finished request. route < 0 or out of range counts nothing. */
void ld_metrics_observe(ld_metrics_t *m, int route, int status, double seconds,
                        uint64_t bytes_out);
/* Count n generated images. */
void ld_metrics_add_samples(ld_metrics_t *m, uint64_t n);

/* The whole exposition as a malloc'd string (caller frees); NULL on ENOMEM. */
char *ld_metrics_render(ld_metrics_t *m, size_t *len);

/* Helpers for collectors: "# HELP name help\n# TYPE name type\n". */
void ld_metrics_family(ld_buf_t *out, const char *name, const char *type, const char *help);
/* A label value escaped per the exposition format (\\, \", \n). */
void ld_metrics_label_value(ld_buf_t *out, const char *v);

#endif
