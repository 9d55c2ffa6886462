#!/usr/bin/python3
"""make_loss_fixtures.py — PyTorch references for latentd's GAN losses
(include/latentd/gan.h) and the WGAN-GP gradient penalty (include/latentd/gp.h),
written once and committed; `make test` never needs torch.

    /usr/bin/python3 tests/reference/make_loss_fixtures.py [OUTDIR]

writes OUTDIR/gan_losses.safetensors (default tests/fixtures).  A tiny dense
GAN as latentd builds it (src/model.c, dropout 0): G = Linear(Z,H) ->
LeakyReLU(0.2) -> Linear(H,X) -> Sigmoid, D = Linear(X,H) -> LeakyReLU(0.2)
-> Linear(H,H2) -> LeakyReLU(0.2) -> Linear(H2,1), X = 16 (4x4 images),
Z = 3, H = 5, H2 = 4, B = 6.  Computed in float64, stored as float32:

  generator.{i}.weight|bias, discriminator.{i}.weight|bias  the weights
  real (B,X), z (B,Z), eps (B)       the batch and wgan-gp's interpolation weights
  <loss>.loss_d, <loss>.loss_g       the D step's and the G step's loss
  <loss>.grad_d.<k>                  d loss_D / d D's parameter k
  <loss>.grad_g.<k>                  d loss_G / d G's parameter k (D unchanged)
  gp.penalty, gp.grad.<k>            the penalty alone (weight 10) and its
                                     gradient, by torch.autograd.grad(create_graph=True)

for <loss> in ns, hinge, lsgan, wgan-gp (wgan-gp's loss_D includes the
penalty, weight 10); lsgan and ns use real_label 0.9.
"""

import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_layer_fixtures import write_safetensors  # noqa: E402

X, Z, H, H2, B = 16, 3, 5, 4, 6
REAL_LABEL = 0.9
GP = 10.0


def nets():
    torch.manual_seed(16)
    G = nn.Sequential(nn.Linear(Z, H), nn.LeakyReLU(0.2), nn.Linear(H, X), nn.Sigmoid()).double()
    D = nn.Sequential(nn.Linear(X, H), nn.LeakyReLU(0.2), nn.Linear(H, H2), nn.LeakyReLU(0.2),
                      nn.Linear(H2, 1)).double()
    return G, D


def dense_names(prefix, seq):
    """latentd's dense names: Linear layers counted from 0."""
    out, i = [], 0
    for m in seq:
        if isinstance(m, nn.Linear):
            out += [(f"{prefix}.{i}.weight", m.weight), (f"{prefix}.{i}.bias", m.bias)]
            i += 1
    return out


def penalty(D, real, fake, eps):
    xh = (eps[:, None] * real + (1 - eps[:, None]) * fake).detach().requires_grad_(True)
    g, = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
    return GP * ((g.norm(dim=1) - 1) ** 2).mean()


def losses(name, dr, df):
    bce = nn.functional.binary_cross_entropy_with_logits
    if name == "ns":
        ld = bce(dr, torch.full_like(dr, REAL_LABEL)) + bce(df, torch.zeros_like(df))
        return ld, lambda d: bce(d, torch.ones_like(d))
    if name == "hinge":
        ld = torch.relu(1 - dr).mean() + torch.relu(1 + df).mean()
        return ld, lambda d: -d.mean()
    if name == "lsgan":
        ld = 0.5 * ((dr - REAL_LABEL) ** 2).mean() + 0.5 * (df ** 2).mean()
        return ld, lambda d: 0.5 * ((d - 1) ** 2).mean()
    ld = df.mean() - dr.mean()  # wgan-gp, penalty added by the caller
    return ld, lambda d: -d.mean()


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
    G, D = nets()
    gen = torch.Generator().manual_seed(61)
    real = torch.rand(B, X, generator=gen, dtype=torch.float64)
    z = torch.randn(B, Z, generator=gen, dtype=torch.float64)
    eps = torch.rand(B, generator=gen, dtype=torch.float64)
    gn, dn = dense_names("generator", G), dense_names("discriminator", D)
    out = [(k, v.detach().numpy()) for k, v in gn + dn]
    out += [("real", real.numpy()), ("z", z.numpy()), ("eps", eps.numpy())]
    for name in ("ns", "hinge", "lsgan", "wgan-gp"):
        fake = G(z)
        ld, lg_of = losses(name, D(real), D(fake.detach()))
        if name == "wgan-gp":
            ld = ld + penalty(D, real, fake.detach(), eps)
        gd = torch.autograd.grad(ld, [v for _, v in dn])  # (wgan-gp: every bias is in D(real))
        lg = lg_of(D(fake))
        gg = torch.autograd.grad(lg, [v for _, v in gn])
        out += [(f"{name}.loss_d", np.array([ld.item()])), (f"{name}.loss_g", np.array([lg.item()]))]
        out += [(f"{name}.grad_d.{k}", g.numpy()) for (k, _), g in zip(dn, gd)]
        out += [(f"{name}.grad_g.{k}", g.numpy()) for (k, _), g in zip(gn, gg)]
        print(f"{name}: loss_D {ld.item():.6f} loss_G {lg.item():.6f}")
    p = penalty(D, real, G(z).detach(), eps)
    gp = torch.autograd.grad(p, [v for _, v in dn], allow_unused=True)  # D's last bias: unused
    gp = [torch.zeros_like(v) if g is None else g for (_, v), g in zip(dn, gp)]
    out += [("gp.penalty", np.array([p.item()]))]
    out += [(f"gp.grad.{k}", g.numpy()) for (k, _), g in zip(dn, gp)]
    print(f"gp: penalty {p.item():.6f}")
    write_safetensors(os.path.join(outdir, "gan_losses.safetensors"), out,
                      {"source": "tests/reference/make_loss_fixtures.py"})


if __name__ == "__main__":
    main()
