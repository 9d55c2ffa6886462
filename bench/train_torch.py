#!/usr/bin/python3
"""PyTorch peer for `make bench`: the same recipes as latentd, one epoch each.

Usage: bench/train_torch.py vae|gan|gan-article|dcgan|conv-vae [--epochs N]
                            [--warmup N] [--threads N] [--limit N]
Prints one line: "<recipe> torch samples/s <value> threads <n> loss <...>".
--limit N trains on the first N images, as `latentd train --limit N`.
--warmup N leaves the first N epochs out of the timing (scripts/bench-train.sh
times latentd's the same way).
The conv recipes use the nets of tests/reference/make_layer_fixtures.py
(DCGAN, ConvVAE), which check_layer's full-step test holds equal to
latentd's --arch dcgan and --arch conv (src/nets.c).
Runs with Debian's python3-torch; only benchmarks and fixtures use it.
"""
import argparse, gzip, os, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from make_layer_fixtures import DCGAN, ConvVAE  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def load_images(split="train"):
    with gzip.open(f"{DATA}/{split}-images-idx3-ubyte.gz", "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[4:8], "big")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=16).reshape(n, 784).astype(np.float32) / 255.0)


def mlp(sizes, act, out_act=None, dropout=0.0):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    if out_act:
        layers.append(out_act())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    def __init__(self, enc=(128, 64), dec=(64, 128), z=20):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)
        self.encoder = mlp([784, *enc], act)
        self.encoder.append(act())
        self.mu = nn.Linear(enc[-1], z)
        self.logvar = nn.Linear(enc[-1], z)
        self.decoder = mlp([z, *dec, 784], act)


def bench_vae(m, x, epochs, batch=128, lr=1e-3, cosine=False, warmup=0):
    """latentd's VAE recipe: Adam 1e-3, BCE-with-logits summed over pixels
    plus KL, per image; m has encoder, mu, logvar and decoder (logits).
    cosine: the rate follows CosineAnnealingLR to 0 over the run's updates,
    as latentd's --lr-schedule cosine.  The first warmup epochs are untimed."""
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    steps = epochs * ((x.shape[0] + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    n, t0, seen = x.shape[0], time.perf_counter(), 0
    for e in range(epochs):
        if e == warmup:
            t0, seen = time.perf_counter(), 0
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            xb = x[perm[i:i + batch]]
            h = m.encoder(xb)
            mu, lv = m.mu(h), m.logvar(h)
            logits = m.decoder(mu + torch.exp(0.5 * lv) * torch.randn_like(mu))
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
            kl = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
            loss = (rec + kl) / xb.shape[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            seen += xb.shape[0]
    return seen / (time.perf_counter() - t0), loss.item()


def mlp_gan(article):
    """G, D and the real label of the article's or the default MLP recipe."""
    act = lambda: nn.LeakyReLU(0.2)
    if article:
        return mlp([100, 128, 128, 784], act, nn.Sigmoid), mlp([784, 128, 128, 1], act), 1.0
    return (mlp([100, 256, 512, 784], act, nn.Sigmoid),
            mlp([784, 512, 256, 1], act, dropout=0.3), 0.9)


def bench_gan(G, D, real_label, x, epochs, batch=64, warmup=0):
    """latentd's GAN step: D on real and on fake (two passes, so batch norm
    sees each alone), Adam; then the same fake through the updated D with the
    non-saturating loss, Adam on G. Adam 2e-4, betas (0.5, 0.999).  The first
    warmup epochs are untimed."""
    og = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    od = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    n, t0, seen = x.shape[0], time.perf_counter(), 0
    for e in range(epochs):
        if e == warmup:
            t0, seen = time.perf_counter(), 0
        perm = torch.randperm(n)
        for i in range(0, n, batch):
            real = x[perm[i:i + batch]]
            b = real.shape[0]
            fake = G(torch.randn(b, 100))
            ld = bce(D(real), torch.full((b, 1), real_label)) + bce(D(fake.detach()), torch.zeros(b, 1))
            od.zero_grad()
            ld.backward()
            od.step()
            lg = bce(D(fake), torch.ones(b, 1))
            og.zero_grad()
            lg.backward()
            og.step()
            seen += b
    return seen / (time.perf_counter() - t0), (ld.item(), lg.item())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", choices=["vae", "gan", "gan-article", "dcgan", "conv-vae"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=0, help="untimed first epochs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="the first N images only (0: all)")
    a = ap.parse_args()
    if a.warmup and a.warmup >= a.epochs:
        ap.error("--warmup must be below --epochs")
    if a.threads:
        torch.set_num_threads(a.threads)
    x = load_images()
    if a.limit:
        x = x[:a.limit]
    torch.manual_seed(1)
    if a.recipe in ("dcgan", "conv-vae"):  # the nets take (B, 1, 28, 28)
        x = x.reshape(-1, 1, 28, 28)
    if a.recipe == "vae":
        sps, loss = bench_vae(VAE(), x, a.epochs, warmup=a.warmup)
    elif a.recipe == "conv-vae":
        # latentd's --arch conv recipe (ld_train_recipe in src/train.c)
        sps, loss = bench_vae(ConvVAE(), x, a.epochs, batch=64, lr=3e-3, cosine=True,
                              warmup=a.warmup)
    elif a.recipe == "dcgan":
        # one-sided label smoothing as latentd's GAN recipe; no generator average (off for layer lists)
        m = DCGAN()
        sps, loss = bench_gan(m.generator, m.discriminator, 0.9, x, a.epochs, warmup=a.warmup)
    else:
        sps, loss = bench_gan(*mlp_gan(a.recipe == "gan-article"), x, a.epochs, warmup=a.warmup)
    print(f"{a.recipe} torch samples/s {sps:.0f} threads {torch.get_num_threads()} loss {loss}")
