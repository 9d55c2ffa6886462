/* invert_api.c — POST /v1/models/{name}/invert. See invert_api.h. */
#include "invert_api.h"

#include "api_impl.h"
#include "latentd/invert.h"
#include "latentd/jobs.h"
#include "latentd/jsonarg.h"

#include <math.h>
#include <string.h>

/* more images than this go to the jobs engine (202 and a job) */
#define INVERT_SYNC_IMAGES 4
#define INVERT_MAX_STEPS 1000
#define INVERT_MAX_RESTARTS 8
/* images * restarts * steps: generator rows run forward and backward, kept
 * to about a second of one thread's CPU (docs/invert.md has the timings) for
 * latentd's default dense generator (100-256-512-784, INVERT_REF_FLOPS per
 * row); a generator that costs more per row (ld_net_flops) gets
 * proportionally fewer rows, but always the default options for one image. */
#define INVERT_MAX_WORK 10000
#define INVERT_REF_FLOPS (2.0 * (100 * 256 + 256 * 512 + 512 * 784) + 256 + 512 + 784)
#define INVERT_LR_MAX 10.0
#define INVERT_PENALTY_MAX 100.0

/* The options of body into o; 0, or -1 answered. */
static int read_opts(ld_req_t *req, const ld_args_t *a, ld_invert_opts_t *o)
{
    long long steps, restarts;
    double lr, pen;
    int seeded;
    ld_invert_opts_default(o);
    if (ld_arg_int(a, "steps", 1, INVERT_MAX_STEPS, o->steps, &steps) != 0 ||
        ld_arg_int(a, "restarts", 1, INVERT_MAX_RESTARTS, o->restarts,
                   &restarts) != 0 ||
        ld_arg_seed(a, "seed", &seeded, &o->seed) != 0 ||
        ld_arg_number(a, "lr", 0, INVERT_LR_MAX, LD_INVERT_LR_DEFAULT, &lr) != 0 ||
        ld_arg_number(a, "z_penalty", 0, INVERT_PENALTY_MAX,
                      LD_INVERT_PENALTY_DEFAULT, &pen) != 0)
        return -1;
    if (!(lr > 0)) {
        ld_req_error(req, 422, "invalid_value", "lr must be > 0 (got 0)");
        return -1;
    }
    o->steps = (int)steps;
    o->restarts = (int)restarts;
    o->lr = (float)lr;
    o->z_penalty = (float)pen;
    if (!seeded)
        o->seed = ld_api_random_seed();
    return 0;
}

/* n images within the limits of an answer while the request waits; 0, or
 * -1 answered. */
static int check_limits(ld_req_t *req, const ld_model_t *m, int n, const ld_invert_opts_t *o)
{
    if (n > INVERT_SYNC_IMAGES) {
        ld_req_error(req, 413, "too_many_images",
                     "%d images; inversion takes at most %d per request here (no jobs engine "
                     "runs larger ones): send them in several requests",
                     n, INVERT_SYNC_IMAGES);
        return -1;
    }
    long long work = (long long)n * o->restarts * o->steps;
    double f = ld_net_flops(&m->layers[m->ops->decode_net]);
    long long max = f > INVERT_REF_FLOPS ? (long long)(INVERT_MAX_WORK * INVERT_REF_FLOPS / f)
                                         : INVERT_MAX_WORK;
    const long long one = (long long)LD_INVERT_RESTARTS_DEFAULT * LD_INVERT_STEPS_DEFAULT;
    max = max > one ? max : one;
    if (work > max) {
        ld_req_error(req, 422, "too_much_work",
                     "images * restarts * steps = %d * %d * %d = %lld; at most %lld per request "
                     "for this generator: lower steps or restarts, or send fewer images",
                     n, o->restarts, o->steps, work, max);
        return -1;
    }
    return 0;
}

static void reply_json(ld_req_t *req, const ld_served_t *s, const ld_invert_opts_t *o, int n,
                       const float *z, const float *mse, const float *xr)
{
    ld_buf_t b = {0};
    ld_invert_json(&b, s->name, &s->model->arch, o, n, z, mse, xr);
    ld_req_reply_json(req, 200, &b);
}

/* X-Latentd-Mse: the per-image MSE, comma-separated (binary answers). */
static void mse_header(ld_req_t *req, int n, const float *mse)
{
    char h[INVERT_SYNC_IMAGES * 16];
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof h; i++)
        k += (size_t)snprintf(h + k, sizeof h - k, i ? ",%.6g" : "%.6g", (double)mse[i]);
    ld_req_header_add(req, "X-Latentd-Mse", h);
}

/* More than INVERT_SYNC_IMAGES images: an inversion job (jobs.h), answered
 * 202 with its id and where its result will be. */
static void submit_job(ld_req_t *req, ld_jobs_t *jobs, const ld_served_t *s,
                       const ld_api_out_t *out, const ld_invert_opts_t *o, int n, const float *x)
{
    if (out->format != 0) {
        ld_req_error(req, 422, "invalid_value",
                     "format: %d images are inverted by a job, whose result is JSON; ask for "
                     "json, or send at most %d images",
                     n, INVERT_SYNC_IMAGES);
        return;
    }
    if ((long long)n * o->restarts > LD_INVERT_MAX_ROWS) {
        ld_req_error(req, 422, "too_much_work",
                     "images * restarts = %d * %d; at most %d in one job: lower restarts or "
                     "send fewer images",
                     n, o->restarts, LD_INVERT_MAX_ROWS);
        return;
    }
    char id[LD_JOB_ID_MAX];
    int retry = 0;
    ld_err_t e;
    int rc = ld_jobs_submit_invert(jobs, s->name, s->file, o, n, s->model->arch.x_dim, x, id,
                                   &retry, &e);
    ld_buf_t b;
    if (ld_api_job_accepted(req, rc, retry, &e, id, &b) != 0)
        return;
    ld_buf_printf(&b, ",\"images\":%d,\"seed\":%llu}", n, (unsigned long long)o->seed);
    ld_req_reply_json(req, 202, &b);
}

/* Invert x (n, x_dim) into z, xr (n, ...) and mse (n); 0, or -1 answered. */
static int run_invert(ld_req_t *req, const ld_served_t *s, int n, const float *x,
                      const ld_invert_opts_t *o, float *z, float *xr, float *mse)
{
    const ld_arch_t *a = &s->model->arch;
    ld_err_t e;
    int rc = z && xr && mse ? ld_invert(s->model, n, x, o, z, xr, mse, &e) : LD_ENOMEM;
    if (rc == LD_ENOMEM) {
        ld_req_error(req, 503, "overloaded", "out of memory");
        return -1;
    }
    if (rc != LD_OK) {
        ld_req_error(req, 422, "unprocessable", "%s", e.msg);
        return -1;
    }
    int finite = 1;
    for (size_t i = 0; i < (size_t)n * (size_t)a->z_dim; i++)
        finite &= isfinite(z[i]) != 0;
    for (int i = 0; i < n; i++)
        finite &= isfinite(mse[i]) != 0;
    if (!finite) {
        ld_req_error(req, 422, "non_finite_output",
                     "the inversion diverged (values not finite): lower lr");
        return -1;
    }
    return 0;
}

int ld_invert_endpoint(ld_req_t *req, const ld_served_t *s, const float *x, float *z)
{
    const ld_arch_t *a = &s->model->arch;
    ld_invert_opts_t o;
    ld_invert_opts_default(&o);
    float *xr = ld_malloc_array((size_t)a->x_dim, sizeof *xr), mse;
    int rc = run_invert(req, s, 1, x, &o, z, xr, &mse);
    free(xr);
    return rc;
}

void ld_invert_handler(ld_req_t *req, void *ctx)
{
    ld_api_t *api = ctx;
    static const char *const data[] = {"images", "png", NULL};
    static const char *const opts[] = {"steps", "restarts", "seed", "lr", "z_penalty",
                                       "format", "cols", "pad", NULL};
    ld_invert_opts_t o;
    ld_api_out_t out;
    ld_args_t args;
    const uint8_t *npy;
    size_t npy_len;
    if (ld_api_body_args(req, data, opts, &args, &npy, &npy_len) != 0 ||
        read_opts(req, &args, &o) != 0 || ld_api_out_opts(&args, api, &out) != 0)
        return;
    ld_served_t *s = ld_api_get_model(req, ld_api_registry(api));
    if (!s)
        return;
    const ld_arch_t *a = &s->model->arch;
    float *x = NULL, *z = NULL, *xr = NULL, *mse = NULL;
    int n = 0;
    if (!s->model->ops->invertible) {
        ld_req_error(req, 422, "unsupported",
                     "model '%s' is %s: only a GAN is inverted (a VAE encodes: use "
                     "/encode or /reconstruct)",
                     s->name, s->model->ops->article);
        goto done;
    }
    if (ld_api_images(req, api, s, &args, npy, npy_len, &x, &n) != 0)
        goto done;
    char sv[32];
    ld_fmt_u64(sv, (unsigned long long)o.seed);
    ld_req_header_add(req, "X-Latentd-Seed", sv);
    if (n > INVERT_SYNC_IMAGES && ld_api_jobs(api)) {
        submit_job(req, ld_api_jobs(api), s, &out, &o, n, x);
        goto done;
    }
    if (check_limits(req, s->model, n, &o) != 0)
        goto done;
    z = ld_malloc_array((size_t)n * (size_t)a->z_dim, sizeof *z);
    xr = ld_malloc_array((size_t)n * (size_t)a->x_dim, sizeof *xr);
    mse = ld_malloc_array((size_t)n, sizeof *mse);
    if (run_invert(req, s, n, x, &o, z, xr, mse) != 0)
        goto done;
    if (out.format != 0) {
        mse_header(req, n, mse);
        ld_api_reply_binary(req, &out, a, xr, n);
    } else {
        reply_json(req, s, &o, n, z, mse, xr);
    }
done:
    free(x);
    free(z);
    free(xr);
    free(mse);
    ld_served_release(s);
}
