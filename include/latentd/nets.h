/* nets.h — the architectures latentd ships, as layer lists (layer.h).
 *
 * Each builder fills ld_net_t descriptions only (shapes, tensor names) and
 * lays them out one after another from *param_off / *buf_off (advanced), so a
 * model's nets share its parameter and buffer blocks.  Images are (1, 28, 28)
 * unless stated; latents are (z, 1, 1).
 *
 *   dcgan     G: z -> Linear -> Unflatten (128,7,7) -> BN2d -> ReLU
 *                 -> ConvT 128->64 4x4 s2 p1 -> BN2d -> ReLU
 *                 -> ConvT 64->1 4x4 s2 p1 -> Sigmoid              (1,28,28)
 *             D: Conv 1->64 4x4 s2 p1 -> LReLU(0.2) -> Conv 64->128 4x4 s2 p1
 *                 -> BN2d -> LReLU(0.2) -> Flatten -> Linear -> 1 logit
 *   conv VAE  encoder: Conv 1->32 4x4 s2 p1 -> LReLU -> Conv 32->64 4x4 s2 p1
 *                 -> LReLU -> Flatten (3136); mu, logvar: Linear 3136 -> z;
 *             decoder from the channel list ch (LD_CONV_VAE_DEC by default):
 *                 Linear z -> ch0*49 -> LReLU -> Unflatten (ch0,7,7)
 *                 [-> Conv 3x3 p1 -> ch1 -> LReLU, when 3 or 4 entries]
 *                 -> ConvT 4x4 s2 p1 -> (c,14,14) -> LReLU
 *                 [-> Conv 3x3 p1 -> LReLU, when 4 entries]
 *                 -> ConvT c->1 4x4 s2 p1 -> logits (1,28,28).
 *             No list is {64, 32}: the decoder of files written before the
 *             list existed.  (The same four nets, names and roles as the
 *             dense VAE's.)
 *   resmlp    Linear in->width -> BN1d -> LReLU, then per block
 *             Residual(Linear -> BN1d -> LReLU -> Linear -> BN1d) -> LReLU,
 *             then Linear width->out and the output activation
 *   cmlp      (cgan, cvae) EmbedConcat of the label (embed channels), then
 *             the dense layers of from_mlp, named as nn.Sequential
 *             ("generator.0.weight" is the embedding, "generator.1" the first Linear)
 *   from_mlp  a dense ld_mlp_t as a layer list with its old tensor names and
 *             the same offsets: Linear, activation, Dropout per layer.
 *
 * Thread-safety: pure functions of their arguments.
 */
#ifndef LATENTD_NETS_H
#define LATENTD_NETS_H

#include "latentd/layer.h"
#include "latentd/mlp.h"

/* g "generator", d "discriminator". */
void ld_nets_dcgan(int z_dim, ld_net_t *g, ld_net_t *d, size_t *param_off, size_t *buf_off);
/* The conv VAE decoder's default channel list: a 3x3 convolution at 7x7
 * (why, and what else was tried: docs/layers.md). */
#define LD_CONV_VAE_DEC {64, 64, 32}
#define LD_CONV_VAE_DEC_N 3
/* enc "encoder", mu "mu", logvar "logvar" (single Linear, LD_NAMES_SINGLE as
 * the dense VAE's heads), dec "decoder" (logits).  ch: n_ch (2..4, or 0 for
 * {64, 32}) channel counts of the decoder's maps, as above. */
void ld_nets_conv_vae(int z_dim, int n_ch, const int *ch, ld_net_t *enc, ld_net_t *mu,
                      ld_net_t *logvar, ld_net_t *dec, size_t *param_off, size_t *buf_off);
/* out_act: LD_LAYER_SIGMOID, _TANH or LD_LAYER_N_KINDS for none. */
void ld_nets_resmlp(ld_net_t *net, const char *name, int in, int width, int blocks, int out,
                    ld_layer_kind_t out_act, float slope, size_t *param_off, size_t *buf_off);
/* cmlp: size[0] is the input width before the embedding; Linear layers to
 * size[1..n_layers]; act after each but the last (out_act), dropout p after
 * each hidden activation while training. */
void ld_nets_cmlp(ld_net_t *net, const char *name, int n_classes, int embed, int n_layers,
                  const int *size, ld_act_t act, ld_act_t out_act, float slope, float p,
                  size_t *param_off, size_t *buf_off);
/* The layer list of m, laid out at m->off (so it reads the same block). */
void ld_nets_from_mlp(const ld_mlp_t *m, ld_net_t *net);

#endif
