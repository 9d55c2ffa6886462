/* invert.c — GAN inversion by Adam on z. See invert.h. */
#include "latentd/invert.h"

#include <math.h>
#include <string.h>

/* Rows of one pass through the generator: bounds the workspace (every
 * layer's output for those rows) to about INVERT_WS_FLOATS floats.  Rows are
 * independent in eval mode, so a chunk's answer is that of the whole batch. */
#define INVERT_WS_FLOATS (1 << 22)

/* Scratch of one inversion of b rows, run through the generator's layer
 * list in chunks of B rows: the net's workspace and, in one allocation, the
 * gradient buffers. */
typedef struct {
    const ld_net_t *g; /* the generator (decode net) */
    int B;             /* rows per pass */
    ld_net_ws_t ws;
    float *mem;
    float *xh;   /* (b, x_dim) G(z) */
    float *dout; /* (B, x_dim) d loss / d G(z) of one chunk */
    float *dz;   /* (b, z_dim) */
    float *m, *v; /* (b, z_dim) Adam's moments */
} inv_ws_t;

static void inv_ws_free(inv_ws_t *w)
{
    ld_net_ws_free(&w->ws);
    free(w->mem);
    w->mem = NULL;
}

static int inv_ws_init(inv_ws_t *w, const ld_model_t *m, int b, ld_err_t *err)
{
    size_t X = (size_t)m->arch.x_dim, Z = (size_t)m->arch.z_dim, row = 0;
    memset(w, 0, sizeof *w);
    w->g = &m->layers[m->ops->decode_net];
    for (int l = 0; l < w->g->n_layers; l++)
        row += 2 * ((size_t)w->g->layers[l].out.c * w->g->layers[l].out.h * w->g->layers[l].out.w);
    w->B = row * (size_t)b <= INVERT_WS_FLOATS ? b : (int)(INVERT_WS_FLOATS / row);
    w->B = w->B > 0 ? w->B : 1;
    w->mem = ld_malloc_array((size_t)b * (X + 3 * Z) + (size_t)w->B * X, sizeof(float));
    if (!w->mem || ld_net_ws_init(&w->ws, w->g, w->B)) {
        inv_ws_free(w);
        return ld_err_set(err, LD_ENOMEM, "out of memory for inverting %d rows", b);
    }
    w->xh = w->mem;
    w->dz = w->xh + (size_t)b * X;
    w->m = w->dz + (size_t)b * Z;
    w->v = w->m + (size_t)b * Z;
    w->dout = w->v + (size_t)b * Z;
    return LD_OK;
}

/* G (eval mode: batch norm on running statistics) on z (b, Z) into w->xh,
 * the loss of each row against x (b, X) into loss (b), and, when dz != NULL,
 * its gradient (b, Z) through G's backward (no parameter gradients).
 * Returns w->xh. */
static const float *loss_grad(const ld_model_t *m, inv_ws_t *w, int b, const float *z,
                              const float *x, float pen, double *loss, float *dz)
{
    const int X = m->arch.x_dim, Z = m->arch.z_dim;
    const float sx = 2.0f / (float)X, sz = 2.0f * pen / (float)Z;
    for (int r0 = 0; r0 < b; r0 += w->B) {
        const int n = b - r0 < w->B ? b - r0 : w->B;
        const float *xh = ld_net_forward(w->g, m->params, m->buffers, &w->ws, n,
                                         z + (size_t)r0 * Z, NULL); /* (n, X) */
        memcpy(w->xh + (size_t)r0 * X, xh, (size_t)n * X * sizeof *xh);
        for (int r = 0; r < n; r++) {
            const float *p = xh + (size_t)r * X, *t = x + (size_t)(r0 + r) * X;
            float *d = w->dout + (size_t)r * X;
            double se = 0, zz = 0;
            for (int i = 0; i < X; i++) {
                float e = p[i] - t[i];
                se += (double)e * e;
                d[i] = sx * e;
            }
            const float *zr = z + (size_t)(r0 + r) * Z;
            for (int i = 0; i < Z; i++)
                zz += (double)zr[i] * zr[i];
            loss[r0 + r] = se / X + (double)pen * zz / Z;
        }
        if (dz)
            ld_net_backward(w->g, m->params, NULL, &w->ws, w->dout, dz + (size_t)r0 * Z, NULL);
    }
    if (dz && pen > 0)
        for (size_t i = 0; i < (size_t)b * Z; i++)
            dz[i] += sz * z[i];
    return w->xh;
}

static int need_gan(const ld_model_t *m, ld_err_t *err)
{
    if (!m->ops->invertible)
        return ld_err_set(err, LD_EUNSUPPORTED, "only a GAN can be inverted (this is %s)",
                          m->ops->article);
    return LD_OK;
}

int ld_invert_loss(const ld_model_t *m, int b, const float *z, const float *x, float z_penalty,
                   double *loss, float *dz, ld_err_t *err)
{
    inv_ws_t w;
    int rc = need_gan(m, err);
    if (rc || (rc = inv_ws_init(&w, m, b, err)))
        return rc;
    loss_grad(m, &w, b, z, x, z_penalty, loss, dz);
    inv_ws_free(&w);
    return LD_OK;
}

void ld_invert_opts_default(ld_invert_opts_t *o)
{
    *o = (ld_invert_opts_t){.steps = LD_INVERT_STEPS_DEFAULT,
                            .restarts = LD_INVERT_RESTARTS_DEFAULT,
                            .seed = 0,
                            .lr = (float)LD_INVERT_LR_DEFAULT,
                            .z_penalty = (float)LD_INVERT_PENALTY_DEFAULT};
}

int ld_invert(const ld_model_t *m, int n, const float *x, const ld_invert_opts_t *o, float *z,
              float *xr, float *mse, ld_err_t *err)
{
    int rc = need_gan(m, err);
    if (rc)
        return rc;
    if (n < 1 || o->steps < 1 || o->restarts < 1 || !(o->lr > 0) || !(o->z_penalty >= 0) ||
        (long long)n * o->restarts > LD_INVERT_MAX_ROWS)
        return ld_err_set(err, LD_EINVAL,
                          "inversion needs n >= 1, steps >= 1, restarts >= 1, lr > 0, "
                          "z_penalty >= 0 and n * restarts <= %d",
                          LD_INVERT_MAX_ROWS);
    const int X = m->arch.x_dim, Z = m->arch.z_dim, R = o->restarts, b = n * R;
    inv_ws_t w;
    if ((rc = inv_ws_init(&w, m, b, err)))
        return rc;
    float *zs = ld_malloc_array((size_t)b * Z, sizeof *zs);   /* (b, Z): row r * n + i */
    float *xs = ld_malloc_array((size_t)b * X, sizeof *xs);   /* x repeated per start */
    double *loss = ld_malloc_array((size_t)b, sizeof *loss);
    if (!zs || !xs || !loss) {
        rc = ld_err_set(err, LD_ENOMEM, "out of memory for inverting %d rows", b);
        goto done;
    }
    /* start r of image i is row r * n + i: the first n rows are what a
     * single-start request with this seed draws */
    ld_model_draw_z(m, o->seed, 1.0f, b, zs);
    for (int r = 0; r < R; r++)
        memcpy(xs + (size_t)r * n * X, x, (size_t)n * X * sizeof *xs);
    memset(w.m, 0, (size_t)b * Z * sizeof(float));
    memset(w.v, 0, (size_t)b * Z * sizeof(float));
    const ld_adam_cfg_t adam = {o->lr, 0.9f, 0.999f, 1e-8f};
    for (int t = 1; t <= o->steps; t++) {
        loss_grad(m, &w, b, zs, xs, o->z_penalty, loss, w.dz);
        ld_adam_step(&adam, t, (size_t)b * Z, zs, w.dz, w.m, w.v);
    }
    const float *xh = loss_grad(m, &w, b, zs, xs, o->z_penalty, loss, NULL);
    for (int i = 0; i < n; i++) {
        int best = i;
        for (int r = 1; r < R; r++)
            if (loss[r * n + i] < loss[best])
                best = r * n + i;
        memcpy(z + (size_t)i * Z, zs + (size_t)best * Z, (size_t)Z * sizeof *z);
        memcpy(xr + (size_t)i * X, xh + (size_t)best * X, (size_t)X * sizeof *xr);
        double se = 0;
        for (int k = 0; k < X; k++) {
            double e = (double)xh[(size_t)best * X + k] - x[(size_t)i * X + k];
            se += e * e;
        }
        mse[i] = (float)(se / X);
    }
done:
    free(zs);
    free(xs);
    free(loss);
    inv_ws_free(&w);
    return rc;
}

void ld_invert_json(ld_buf_t *b, const char *model, const ld_arch_t *a, const ld_invert_opts_t *o,
                    int n, const float *z, const float *mse, const float *xr)
{
    ld_buf_puts(b, "{\"model\":");
    ld_buf_json_str(b, model);
    ld_buf_printf(b, ",\"seed\":%llu,\"steps\":%d,\"restarts\":%d,\"lr\":%.6g,\"z_penalty\":%.6g",
                  (unsigned long long)o->seed, o->steps, o->restarts, (double)o->lr,
                  (double)o->z_penalty);
    ld_buf_printf(b, ",\"shape\":[%d,%d,%d],\"z\":", n, a->img_h, a->img_w);
    ld_buf_json_matrix(b, z, (size_t)n, (size_t)a->z_dim);
    ld_buf_puts(b, ",\"mse\":");
    ld_buf_json_floats(b, mse, (size_t)n);
    ld_buf_puts(b, ",\"images\":");
    ld_buf_json_matrix(b, xr, (size_t)n, (size_t)a->x_dim);
    ld_buf_putc(b, '}');
}
