/* nets.c — the shipped architectures as layer lists. See nets.h.
 * The shapes are fixed here, so a refused layer is a programmer error. */
#include "latentd/nets.h"

#include <string.h>

#define OK(call) LD_ASSERT((call) == LD_OK)

static void lay_out(ld_net_t *net, size_t *param_off, size_t *buf_off)
{
    OK(ld_net_layout(net, param_off, buf_off, NULL));
}

void ld_nets_dcgan(int z_dim, ld_net_t *g, ld_net_t *d, size_t *param_off, size_t *buf_off)
{
    ld_net_init(g, "generator", LD_NAMES_SEQUENTIAL, (ld_shape_t){z_dim, 1, 1});
    OK(ld_net_add_linear(g, 128 * 7 * 7, NULL));                    /* (6272) */
    OK(ld_net_add_unflatten(g, (ld_shape_t){128, 7, 7}, NULL));     /* (128, 7, 7) */
    OK(ld_net_add_bn(g, LD_LAYER_BN2D, 0.1f, 1e-5f, NULL));
    OK(ld_net_add_act(g, LD_LAYER_RELU, 0, NULL));
    OK(ld_net_add_convt(g, 64, 4, 2, 1, NULL));                     /* (64, 14, 14) */
    OK(ld_net_add_bn(g, LD_LAYER_BN2D, 0.1f, 1e-5f, NULL));
    OK(ld_net_add_act(g, LD_LAYER_RELU, 0, NULL));
    OK(ld_net_add_convt(g, 1, 4, 2, 1, NULL));                      /* (1, 28, 28) */
    OK(ld_net_add_act(g, LD_LAYER_SIGMOID, 0, NULL));
    lay_out(g, param_off, buf_off);

    ld_net_init(d, "discriminator", LD_NAMES_SEQUENTIAL, (ld_shape_t){1, 28, 28});
    OK(ld_net_add_conv(d, 64, 4, 2, 1, NULL));                      /* (64, 14, 14) */
    OK(ld_net_add_act(d, LD_LAYER_LRELU, 0.2f, NULL));
    OK(ld_net_add_conv(d, 128, 4, 2, 1, NULL));                     /* (128, 7, 7) */
    OK(ld_net_add_bn(d, LD_LAYER_BN2D, 0.1f, 1e-5f, NULL));
    OK(ld_net_add_act(d, LD_LAYER_LRELU, 0.2f, NULL));
    OK(ld_net_add_flatten(d, NULL));                                /* (6272) */
    OK(ld_net_add_linear(d, 1, NULL));                              /* (1) logit */
    lay_out(d, param_off, buf_off);
}

void ld_nets_conv_vae(int z_dim, int n_ch, const int *ch, ld_net_t *enc, ld_net_t *mu,
                      ld_net_t *logvar, ld_net_t *dec, size_t *param_off, size_t *buf_off)
{
    static const int before_lists[2] = {64, 32};
    if (n_ch == 0) {
        n_ch = 2;
        ch = before_lists;
    }
    LD_ASSERT(n_ch >= 2 && n_ch <= 4);
    ld_net_init(enc, "encoder", LD_NAMES_SEQUENTIAL, (ld_shape_t){1, 28, 28});
    OK(ld_net_add_conv(enc, 32, 4, 2, 1, NULL));                    /* (32, 14, 14) */
    OK(ld_net_add_act(enc, LD_LAYER_LRELU, 0.2f, NULL));
    OK(ld_net_add_conv(enc, 64, 4, 2, 1, NULL));                    /* (64, 7, 7) */
    OK(ld_net_add_act(enc, LD_LAYER_LRELU, 0.2f, NULL));
    OK(ld_net_add_flatten(enc, NULL));                              /* (3136) */
    lay_out(enc, param_off, buf_off);

    ld_net_t *heads[2] = {mu, logvar};
    for (int i = 0; i < 2; i++) {
        ld_net_init(heads[i], i ? "logvar" : "mu", LD_NAMES_SINGLE, ld_net_out(enc));
        OK(ld_net_add_linear(heads[i], z_dim, NULL));               /* (z) */
        lay_out(heads[i], param_off, buf_off);
    }

    /* ch: the 7x7 maps (two when n_ch >= 3), then the 14x14 maps (two when
     * n_ch == 4); a 3x3 convolution leads from a map to the next at its size */
    int n7 = n_ch >= 3 ? 2 : 1;
    ld_net_init(dec, "decoder", LD_NAMES_SEQUENTIAL, (ld_shape_t){z_dim, 1, 1});
    OK(ld_net_add_linear(dec, ch[0] * 7 * 7, NULL));                /* (ch0 * 49) */
    OK(ld_net_add_act(dec, LD_LAYER_LRELU, 0.2f, NULL));
    OK(ld_net_add_unflatten(dec, (ld_shape_t){ch[0], 7, 7}, NULL));
    for (int i = 1; i < n_ch; i++) {
        if (i == n7)
            OK(ld_net_add_convt(dec, ch[i], 4, 2, 1, NULL));        /* (ch[i], 14, 14) */
        else
            OK(ld_net_add_conv(dec, ch[i], 3, 1, 1, NULL));         /* same size */
        OK(ld_net_add_act(dec, LD_LAYER_LRELU, 0.2f, NULL));
    }
    OK(ld_net_add_convt(dec, 1, 4, 2, 1, NULL));                    /* (1, 28, 28) logits */
    lay_out(dec, param_off, buf_off);
}

void ld_nets_resmlp(ld_net_t *net, const char *name, int in, int width, int blocks, int out,
                    ld_layer_kind_t out_act, float slope, size_t *param_off, size_t *buf_off)
{
    ld_net_init(net, name, LD_NAMES_SEQUENTIAL, (ld_shape_t){in, 1, 1});
    OK(ld_net_add_linear(net, width, NULL));
    OK(ld_net_add_bn(net, LD_LAYER_BN1D, 0.1f, 1e-5f, NULL));
    OK(ld_net_add_act(net, LD_LAYER_LRELU, slope, NULL));
    for (int i = 0; i < blocks; i++) {
        OK(ld_net_res_begin(net, NULL));
        OK(ld_net_add_linear(net, width, NULL));
        OK(ld_net_add_bn(net, LD_LAYER_BN1D, 0.1f, 1e-5f, NULL));
        OK(ld_net_add_act(net, LD_LAYER_LRELU, slope, NULL));
        OK(ld_net_add_linear(net, width, NULL));
        OK(ld_net_add_bn(net, LD_LAYER_BN1D, 0.1f, 1e-5f, NULL));
        OK(ld_net_res_end(net, NULL));
        OK(ld_net_add_act(net, LD_LAYER_LRELU, slope, NULL));
    }
    OK(ld_net_add_linear(net, out, NULL));
    if (out_act != LD_LAYER_N_KINDS)
        OK(ld_net_add_act(net, out_act, 0, NULL));
    lay_out(net, param_off, buf_off);
}

static void add_act(ld_net_t *net, ld_act_t a, float slope)
{
    static const ld_layer_kind_t kinds[] = {
        [LD_ACT_LRELU] = LD_LAYER_LRELU, [LD_ACT_RELU] = LD_LAYER_RELU,
        [LD_ACT_TANH] = LD_LAYER_TANH, [LD_ACT_SIGMOID] = LD_LAYER_SIGMOID};
    if (a != LD_ACT_NONE)
        OK(ld_net_add_act(net, kinds[a], slope, NULL));
}

/* The dense layers of an MLP: Linear to each of size[1..n_layers], each
 * followed by its activation and, but the last, dropout when p > 0. */
static void add_dense(ld_net_t *net, int n_layers, const int *size, ld_act_t act,
                      ld_act_t out_act, float slope, float p)
{
    for (int i = 0; i < n_layers; i++) {
        int last = i + 1 == n_layers;
        OK(ld_net_add_linear(net, size[i + 1], NULL));
        add_act(net, last ? out_act : act, slope);
        if (!last && p > 0)
            OK(ld_net_add_dropout(net, p, NULL));
    }
}

void ld_nets_from_mlp(const ld_mlp_t *m, ld_net_t *net)
{
    ld_net_init(net, m->name, m->indexed ? LD_NAMES_DENSE : LD_NAMES_SINGLE,
                (ld_shape_t){m->size[0], 1, 1});
    add_dense(net, m->n_layers, m->size, m->act, m->out_act, m->slope, m->dropout);
    size_t off = m->off, buf = 0;
    lay_out(net, &off, &buf);
}

void ld_nets_cmlp(ld_net_t *net, const char *name, int n_classes, int embed, int n_layers,
                  const int *size, ld_act_t act, ld_act_t out_act, float slope, float p,
                  size_t *param_off, size_t *buf_off)
{
    ld_net_init(net, name, LD_NAMES_SEQUENTIAL, (ld_shape_t){size[0], 1, 1});
    OK(ld_net_add_embed(net, n_classes, embed, NULL)); /* (size[0] + embed) */
    add_dense(net, n_layers, size, act, out_act, slope, p);
    lay_out(net, param_off, buf_off);
}
