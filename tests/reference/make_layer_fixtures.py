#!/usr/bin/python3
"""make_layer_fixtures.py — PyTorch references for latentd's layer list
(include/latentd/layer.h), written once and committed; `make test` never
needs torch.

    /usr/bin/python3 tests/reference/make_layer_fixtures.py [OUTDIR]
    ... --check-latentd FILE        nets written by check_layer.c, in torch
    ... --check-model MODEL IO      a model saved by latentd, in torch

writes OUTDIR/layers.safetensors (default tests/fixtures).  For each case
(conv, convt, bn2d, bn1d, bn_eval, layernorm, embed_z, embed_img, residual) a
small net is built twice: as a torch module below, and as the layer list in
the metadata entry "<case>" (latentd's ld_net_to_json format, parsed by the C
test with ld_net_from_json).  Tensors, all float32:

  <case>.<k>          the module's state_dict (the C net is named <case>, so
                      these are exactly the names ld_net_tensors gives);
                      num_batches_tracked is stored as F32 here
  x.<case>            input (B, C, H, W) or (B, C)
  labels.<case>       class labels as floats (embedding cases)
  dy.<case>           the upstream gradient: loss = sum(y * dy)
  y.<case>, dx.<case> output and input gradient
  grad.<case>.<k>     gradient of every parameter
  after.<case>.<k>    every buffer after the forward (running statistics)

Norm weights and biases and running statistics are drawn at random so that
no affine part is the identity.  Training mode unless the case is *_eval.

Classes a PyTorch user needs to rebuild latentd's nets (same state_dict):
Net (nn.Sequential that hands labels to EmbedConcat), EmbedConcat
(nn.Embedding whose row of n_classes x (channels*H*W) is appended to the
input as `channels` more channels) and Residual (y = x + f(x), f a Net).

It also writes OUTDIR/layer_steps.safetensors: one full training step of
the DCGAN and of the conv VAE (include/latentd/nets.h), B = 8 images
0..7 of Fashion-MNIST's training set.  The weights of every Linear, Conv2d
and ConvTranspose2d come from a formula both sides compute, so they need
not be stored: the k-th tensor of the state_dict (buffers counted), entry
j, is bound * (2u - 1) with u = ((j * 2654435761 + k * 40503 + 1) mod 2^32)
/ 2^32 in double, rounded to float, bound = 1/sqrt(prod(weight.shape[1:]))
for a weight and its bias; norms keep torch's defaults.  Stored: z or eps,
the losses, each parameter's gradient of the step (a strided subset of at
most 256 entries plus [L1, L2, max] of the whole tensor), the parameters
after Adam (same subset and the norms of after - before), and all running
statistics after the step.
  GAN:  fake = G(z); loss_D = mean BCE(D(real), 0.9) + mean BCE(D(fake.detach()), 0);
        D's Adam step; loss_G = mean BCE(D(fake), 1); G's Adam step.  Adam lr 2e-4,
        betas (0.5, 0.999), eps 1e-8.  Both nets in training mode throughout.
  VAE:  loss = (BCE-with-logits summed + KL) / B, z = mu + exp(logvar/2) eps;
        Adam lr 1e-3, betas (0.9, 0.999).

--check-latentd FILE  the reverse direction: FILE is written by check_layer's
test_state_dict_file (LD_TORCH_CHECK_OUT=FILE); every net in it is rebuilt
in torch from its layer list ("layers.<net>" metadata) with build_net(),
loaded with load_state_dict(strict=True) and run in eval mode on the stored
input; the output must match latentd's within 1e-5.
"""

import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn


class Net(nn.Sequential):
    def forward(self, x, labels=None):
        for m in self:
            x = m(x, labels) if isinstance(m, (EmbedConcat, Residual)) else m(x)
        return x


class EmbedConcat(nn.Embedding):
    def __init__(self, n_classes, channels, in_shape):
        c, h, w = in_shape
        super().__init__(n_classes, channels * h * w)
        self.out_chw = (channels, h, w)

    def forward(self, x, labels):
        e = super().forward(labels)
        if x.dim() == 2:
            return torch.cat([x, e], 1)
        return torch.cat([x, e.view(-1, *self.out_chw)], 1)


class Residual(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.f = Net(*layers)

    def forward(self, x, labels=None):
        return x + self.f(x, labels)


def write_safetensors(path, tensors, metadata):
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for name, t in tensors:
        assert name not in header, name
        i64 = isinstance(t, torch.Tensor) and t.dtype == torch.int64  # num_batches_tracked
        a = np.asarray(t, dtype="<i8" if i64 else "<f4")  # shape first: see below
        b = np.ascontiguousarray(a).tobytes()  # (ascontiguousarray makes 0-d 1-d)
        header[name] = {"dtype": "I64" if i64 else "F32", "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def layers_json(name, in_shape, layers):
    return json.dumps({"name": name, "names": "sequential", "input": list(in_shape),
                       "layers": layers}, separators=(",", ":"))


# Each case: (name, input shape (C,H,W), batch, n_classes or 0, training,
#             torch layers, latentd layer list)
def cases():
    L = []
    L.append(("conv", (3, 7, 7), 3, 0, True,
              [nn.Conv2d(3, 4, 3, 2, 1), nn.LeakyReLU(0.2)],
              [{"type": "Conv2d", "out": 4, "kernel": 3, "stride": 2, "padding": 1},
               {"type": "LeakyReLU", "slope": 0.2}]))
    L.append(("convt", (4, 5, 5), 3, 0, True,
              [nn.ConvTranspose2d(4, 3, 4, 2, 1), nn.Tanh()],
              [{"type": "ConvTranspose2d", "out": 3, "kernel": 4, "stride": 2, "padding": 1},
               {"type": "Tanh"}]))
    L.append(("bn2d", (3, 4, 4), 4, 0, True,
              [nn.Conv2d(3, 5, 4, 2, 1), nn.BatchNorm2d(5), nn.ReLU()],
              [{"type": "Conv2d", "out": 5, "kernel": 4, "stride": 2, "padding": 1},
               {"type": "BatchNorm2d"}, {"type": "ReLU"}]))
    L.append(("bn1d", (6, 1, 1), 5, 0, True,
              [nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Sigmoid()],
              [{"type": "Linear", "out": 5}, {"type": "BatchNorm1d"}, {"type": "Sigmoid"}]))
    L.append(("bn_eval", (3, 4, 4), 4, 0, False,
              [nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 5), nn.BatchNorm1d(5)],
              [{"type": "BatchNorm2d"}, {"type": "Flatten"}, {"type": "Linear", "out": 5},
               {"type": "BatchNorm1d"}]))
    L.append(("layernorm", (2, 3, 3), 3, 0, True,
              [nn.LayerNorm([2, 3, 3]), nn.Flatten(), nn.Linear(18, 4), nn.LayerNorm(4)],
              [{"type": "LayerNorm"}, {"type": "Flatten"}, {"type": "Linear", "out": 4},
               {"type": "LayerNorm"}]))
    L.append(("embed_z", (5, 1, 1), 4, 4, True,
              [EmbedConcat(4, 3, (5, 1, 1)), nn.Linear(8, 6), nn.LeakyReLU(0.2)],
              [{"type": "EmbedConcat", "classes": 4, "channels": 3},
               {"type": "Linear", "out": 6}, {"type": "LeakyReLU", "slope": 0.2}]))
    L.append(("embed_img", (1, 4, 4), 3, 3, True,
              [EmbedConcat(3, 2, (1, 4, 4)), nn.Conv2d(3, 2, 3, 1, 1),
               nn.Flatten(), nn.Unflatten(1, (2, 4, 4))],
              [{"type": "EmbedConcat", "classes": 3, "channels": 2},
               {"type": "Conv2d", "out": 2, "kernel": 3, "stride": 1, "padding": 1},
               {"type": "Flatten"}, {"type": "Unflatten", "shape": [2, 4, 4]}]))
    L.append(("residual", (5, 1, 1), 4, 0, True,
              [nn.Linear(5, 6),
               Residual(nn.Linear(6, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 6)),
               nn.Tanh()],
              [{"type": "Linear", "out": 6},
               {"type": "Residual", "layers": [{"type": "Linear", "out": 6},
                                               {"type": "BatchNorm1d"}, {"type": "ReLU"},
                                               {"type": "Linear", "out": 6}]},
               {"type": "Tanh"}]))
    return L


def make(outdir):
    torch.manual_seed(20261204)
    out, meta = [], {"source": "tests/reference/make_layer_fixtures.py",
                     "torch": torch.__version__}
    for name, shape, B, n_classes, training, tl, spec in cases():
        net = Net(*tl)
        with torch.no_grad():  # non-trivial affine parts and running statistics
            for m in net.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.5, 0.5)
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(3)
        net.train(training)
        for k, v in net.state_dict().items():
            out.append((f"{name}.{k}", v.detach().numpy().astype(np.float32)))
        xs = (B, shape[0]) if shape[1:] == (1, 1) else (B, *shape)
        x = (torch.randn(*xs) * 1.5 + 0.3).requires_grad_(True)
        labels = torch.randint(0, n_classes, (B,)) if n_classes else None
        y = net(x, labels)
        dy = torch.randn_like(y)
        (y * dy).sum().backward()
        out += [(f"x.{name}", x.detach().numpy()), (f"dy.{name}", dy.numpy()),
                (f"y.{name}", y.detach().numpy()), (f"dx.{name}", x.grad.numpy())]
        if labels is not None:
            out.append((f"labels.{name}", labels.numpy().astype(np.float32)))
        for k, p in net.named_parameters():
            out.append((f"grad.{name}.{k}", p.grad.numpy()))
        for k, b in net.named_buffers():
            out.append((f"after.{name}.{k}", b.numpy().astype(np.float32)))
        meta[name] = layers_json(name, shape, spec)
        print(f"{name}: y {tuple(y.shape)}, {sum(p.numel() for p in net.parameters())} params")
    path = os.path.join(outdir, "layers.safetensors")
    write_safetensors(path, out, meta)
    print(f"{path}: {os.path.getsize(path)} bytes")


# ---- one training step of the shipped conv nets ----------------------------

MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
SUBSET = 256


def fashion(n):
    import gzip
    with gzip.open(MNIST, "rb") as f:
        buf = f.read()
    px = np.frombuffer(buf, dtype=np.uint8, offset=16, count=n * 784)
    return torch.from_numpy((px.astype(np.float32) / np.float32(255.0)).reshape(n, 1, 28, 28))


def formula_init(model):
    """Overwrite Linear/Conv weights and biases by the documented formula."""
    sd = model.state_dict()
    bound = None
    with torch.no_grad():
        for k, (name, t) in enumerate(sd.items()):
            mod = model.get_submodule(name.rsplit(".", 1)[0])
            if not isinstance(mod, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                continue
            if name.endswith("weight"):
                bound = 1.0 / np.sqrt(float(np.prod(t.shape[1:])))
            j = np.arange(t.numel(), dtype=np.uint64)
            h = (j * np.uint64(2654435761) + np.uint64(k * 40503 + 1)) & np.uint64(0xffffffff)
            u = h.astype(np.float64) / 4294967296.0
            t.copy_(torch.from_numpy((bound * (2.0 * u - 1.0)).astype(np.float32)).view(t.shape))


def subset(numel):
    step = max(1, numel // SUBSET)
    return np.arange(0, numel, step)[:SUBSET]


def norms(a):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return np.array([np.abs(a).sum(), np.sqrt((a * a).sum()), np.abs(a).max()])


def record(model, before, grads, out):
    for name, t in model.state_dict().items():
        a = t.detach().numpy().astype(np.float32).reshape(-1)
        if name in grads:
            g = grads[name].reshape(-1)
            idx = subset(g.size)
            out += [(f"grad.{name}", g[idx]), (f"gnorm.{name}", norms(g)),
                    (f"after.{name}", a[idx]), (f"dnorm.{name}", norms(a - before[name]))]
        else:  # a buffer: whole
            out.append((f"after.{name}", a))


class DCGAN(nn.Module):
    def __init__(self, z=100):
        super().__init__()
        self.generator = Net(nn.Linear(z, 128 * 7 * 7), nn.Unflatten(1, (128, 7, 7)),
                             nn.BatchNorm2d(128), nn.ReLU(), nn.ConvTranspose2d(128, 64, 4, 2, 1),
                             nn.BatchNorm2d(64), nn.ReLU(), nn.ConvTranspose2d(64, 1, 4, 2, 1),
                             nn.Sigmoid())
        self.discriminator = Net(nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128),
                                 nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(128 * 7 * 7, 1))


class ConvVAE(nn.Module):
    """latentd's --arch conv.  dec: the decoder's channels (nets.h), the 7x7
    maps (two: a 3x3 conv between them when 3 or 4 entries), then the 14x14
    maps; (64, 32) is the decoder of files written before the list."""
    def __init__(self, z=20, dec=(64, 64, 32)):
        super().__init__()
        self.encoder = Net(nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2),
                           nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten())
        self.mu = nn.Linear(3136, z)
        self.logvar = nn.Linear(3136, z)
        n7 = 2 if len(dec) >= 3 else 1
        mods = [nn.Linear(z, dec[0] * 49), nn.LeakyReLU(0.2), nn.Unflatten(1, (dec[0], 7, 7))]
        for i in range(1, len(dec)):
            if i == n7:
                mods.append(nn.ConvTranspose2d(dec[i - 1], dec[i], 4, 2, 1))
            else:
                mods.append(nn.Conv2d(dec[i - 1], dec[i], 3, 1, 1))
            mods.append(nn.LeakyReLU(0.2))
        mods.append(nn.ConvTranspose2d(dec[-1], 1, 4, 2, 1))
        self.decoder = Net(*mods)


def bce(logits, target):
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def make_steps(outdir):
    B = 8
    real = fashion(B)
    gen = torch.Generator().manual_seed(5)
    out = []

    gan = DCGAN()
    formula_init(gan)
    gan.train()
    before = {k: v.detach().numpy().astype(np.float32).reshape(-1).copy()
              for k, v in gan.state_dict().items()}
    G, D = gan.generator, gan.discriminator
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8, foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-8, foreach=False)
    z = torch.randn(B, 100, generator=gen)
    fake = G(z)
    opt_d.zero_grad()
    l_real, l_fake = D(real), D(fake.detach())
    loss_d = bce(l_real, torch.full_like(l_real, 0.9)) + bce(l_fake, torch.zeros_like(l_fake))
    loss_d.backward()
    grads = {f"discriminator.{k}": p.grad.numpy().copy() for k, p in D.named_parameters()}
    opt_d.step()
    opt_g.zero_grad()
    l_g = D(fake)
    loss_g = bce(l_g, torch.ones_like(l_g))
    loss_g.backward()
    grads.update({f"generator.{k}": p.grad.numpy().copy() for k, p in G.named_parameters()})
    opt_g.step()
    out += [("gan.z", z.numpy()), ("gan.loss", np.array([loss_d.item(), loss_g.item()]))]
    rec = []
    record(gan, before, grads, rec)
    out += [("gan." + k, v) for k, v in rec]
    print(f"dcgan step: loss_D {loss_d.item():.6f} loss_G {loss_g.item():.6f}")

    vae = ConvVAE()
    formula_init(vae)
    vae.train()
    before = {k: v.detach().numpy().astype(np.float32).reshape(-1).copy()
              for k, v in vae.state_dict().items()}
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    eps = torch.randn(B, 20, generator=gen)
    h = vae.encoder(real)
    mu, lv = vae.mu(h), vae.logvar(h)
    zz = mu + torch.exp(0.5 * lv) * eps
    logits = vae.decoder(zz)
    r = nn.functional.binary_cross_entropy_with_logits(logits, real, reduction="sum")
    kl = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
    loss = (r + kl) / B
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.numpy().copy() for k, p in vae.named_parameters()}
    opt.step()
    out += [("vae.eps", eps.numpy()), ("vae.loss", np.array([loss.item(), r.item(), kl.item()]))]
    rec = []
    record(vae, before, grads, rec)
    out += [("vae." + k, v) for k, v in rec]
    print(f"conv vae step: loss {loss.item():.6f} rec {r.item():.4f} kl {kl.item():.6f}")

    path = os.path.join(outdir, "layer_steps.safetensors")
    write_safetensors(path, out, {"source": "tests/reference/make_layer_fixtures.py",
                                  "torch": torch.__version__, "subset": str(SUBSET)})
    print(f"{path}: {os.path.getsize(path)} bytes")


# ---- the reverse direction ------------------------------------------------

def build_net(spec):
    """A torch Net equal to a latentd layer list (ld_net_to_json's format)."""
    def make(layers, shape):
        mods = []
        for l in layers:
            t, (c, h, w) = l["type"], shape
            if t == "Linear":
                m, shape = nn.Linear(c, l["out"]), (l["out"], 1, 1)
            elif t in ("Conv2d", "ConvTranspose2d"):
                k, st, p = l["kernel"], l["stride"], l["padding"]
                if t == "Conv2d":
                    m = nn.Conv2d(c, l["out"], k, st, p)
                    shape = (l["out"], (h + 2 * p - k) // st + 1, (w + 2 * p - k) // st + 1)
                else:
                    m = nn.ConvTranspose2d(c, l["out"], k, st, p)
                    shape = (l["out"], (h - 1) * st - 2 * p + k, (w - 1) * st - 2 * p + k)
            elif t in ("BatchNorm1d", "BatchNorm2d"):
                m = getattr(nn, t)(c, eps=l["eps"], momentum=l["momentum"])
            elif t == "LayerNorm":
                m = nn.LayerNorm([c] if (h, w) == (1, 1) else [c, h, w], eps=l["eps"])
            elif t == "Dropout":
                m = nn.Dropout(l["p"])
            elif t == "LeakyReLU":
                m = nn.LeakyReLU(l["slope"])
            elif t in ("ReLU", "Tanh", "Sigmoid"):
                m = getattr(nn, t)()
            elif t == "Flatten":
                m, shape = nn.Flatten(), (c * h * w, 1, 1)
            elif t == "Unflatten":
                m, shape = nn.Unflatten(1, tuple(l["shape"])), tuple(l["shape"])
            elif t == "EmbedConcat":
                m, shape = EmbedConcat(l["classes"], l["channels"], shape), (c + l["channels"], h, w)
            elif t == "Residual":
                m = Residual(*make(l["layers"], shape)[0])
            else:
                raise ValueError(f"unknown layer type {t}")
            mods.append(m)
        return mods, shape
    return Net(*make(spec["layers"], tuple(spec["input"]))[0])


def check_latentd(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta, data = header.pop("__metadata__"), buf[8 + n:]
    t = {k: torch.from_numpy(np.frombuffer(data[e["data_offsets"][0]:e["data_offsets"][1]],
                                           dtype="<f4").reshape(e["shape"]).copy())
         for k, e in header.items()}
    worst = 0.0
    for key, js in meta.items():
        spec = json.loads(js)
        name, net = spec["name"], build_net(spec)
        sd = {k[len(name) + 1:]: (v.long() if k.endswith("num_batches_tracked") else v)
              for k, v in t.items() if k.startswith(name + ".")}
        if spec["names"] == "single":  # one nn.Linear, "mu.weight"
            sd = {f"0.{k}": v for k, v in sd.items()}
        elif spec["names"] == "dense":  # only Linear layers counted: map to places
            lin = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
            sd = {f"{lin[int(k.split('.')[0])]}.{k.split('.', 1)[1]}": v for k, v in sd.items()}
        net.load_state_dict(sd, strict=True)
        net.eval()
        c, h, w = spec["input"]
        x = t[f"check.x.{name}"]
        x = x if (h, w) == (1, 1) else x.view(-1, c, h, w)
        with torch.no_grad():
            y = net(x).reshape(x.shape[0], -1)
        d = (y - t[f"check.y.{name}"]).abs().max().item()
        worst = max(worst, d)
        print(f"{name}: {len(sd)} tensors loaded strictly, max |torch - latentd| = {d:.3g}")
    assert worst <= 1e-5, worst
    return 0


# ---- whole models, both ways ----------------------------------------------

def read_safetensors(path):
    """{name: tensor} (F32, I64) and the metadata of a safetensors file."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta, data = header.pop("__metadata__", {}), buf[8 + n:]
    dt = {"F32": "<f4", "I64": "<i8"}
    t = {k: torch.from_numpy(np.frombuffer(data[e["data_offsets"][0]:e["data_offsets"][1]],
                                           dtype=dt[e["dtype"]]).reshape(e["shape"]).copy())
         for k, e in header.items()}
    return t, meta


def model_nets(path):
    """The nets of a latentd model file (its "latentd.layers.<net>" metadata)
    rebuilt in torch, each loaded with load_state_dict(strict=True); every
    tensor of the file must belong to one of them."""
    t, meta = read_safetensors(path)
    nets, used = {}, set()
    for key, js in meta.items():
        if not key.startswith("latentd.layers."):
            continue
        spec = json.loads(js)
        name, net = spec["name"], build_net(spec)
        sd = {k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".")}
        if spec["names"] == "single":  # one nn.Linear, "mu.weight"
            sd = {f"0.{k}": v for k, v in sd.items()}
        net.load_state_dict(sd, strict=True)
        used |= {k for k in t if k.startswith(name + ".")}
        nets[name] = (net.eval(), spec)
    assert used == set(t), sorted(set(t) - used)
    return nets


def check_model(path, io_path):
    """A model saved by latentd (tests/check_model.c) in torch: every net loads
    strictly and gives latentd's eval-mode outputs (io_path: x.<net>, y.<net>)."""
    io, _ = read_safetensors(io_path)
    worst = 0.0
    for name, (net, spec) in model_nets(path).items():
        c, h, w = spec["input"]
        x = io[f"x.{name}"]
        with torch.no_grad():
            y = net(x if (h, w) == (1, 1) else x.view(-1, c, h, w)).reshape(x.shape[0], -1)
        d = (y - io[f"y.{name}"]).abs().max().item()
        worst = max(worst, d)
        print(f"{path}: {name} loaded strictly, max |torch - latentd| = {d:.3g}")
    assert worst <= 1e-5, worst
    return 0


def resmlp_spec(name, inp, width, blocks, out, out_act):
    """nets.h's ld_nets_resmlp as a layer list."""
    bn = {"type": "BatchNorm1d", "momentum": 0.1, "eps": 1e-05}
    lrelu = {"type": "LeakyReLU", "slope": 0.2}
    layers = [{"type": "Linear", "out": width}, bn, lrelu]
    for _ in range(blocks):
        layers += [{"type": "Residual", "layers": [{"type": "Linear", "out": width}, bn, lrelu,
                                                   {"type": "Linear", "out": width}, bn]}, lrelu]
    layers.append({"type": "Linear", "out": out})
    if out_act:
        layers.append({"type": out_act})
    return {"name": name, "names": "sequential", "input": [inp, 1, 1], "layers": layers}


def make_torch_model(outdir):
    """torch_resmlp.safetensors: a small resmlp GAN built and stepped in torch
    (running statistics moved by three training-mode batches), saved as a
    PyTorch user would for latentd (state_dict, num_batches_tracked as I64,
    the "arch" metadata); torch_resmlp_io.safetensors: z and G(z) in eval
    mode, which latentd's decode must give."""
    torch.manual_seed(3)
    specs = [resmlp_spec("generator", 8, 16, 2, 784, "Sigmoid"),
             resmlp_spec("discriminator", 784, 16, 2, 1, None)]
    tensors, meta = [], {
        "format": "latentd/1", "kind": "gan",
        "arch": json.dumps({"kind": "gan", "image": [28, 28], "z": 8, "generator": [16, 16],
                            "discriminator": [16, 16], "act": "leaky_relu", "slope": 0.2,
                            "dropout": 0, "net": "resmlp"}, separators=(",", ":"))}
    nets = {}
    for spec in specs:
        net = build_net(spec)
        for m in net.modules():  # no norm is the identity
            if isinstance(m, nn.BatchNorm1d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
        net.train()
        with torch.no_grad():
            for _ in range(3):
                net(torch.randn(16, spec["input"][0]))
        nets[spec["name"]] = net.eval()
        tensors += [(f"{spec['name']}.{k}", v) for k, v in net.state_dict().items()]
    z = torch.randn(5, 8)
    with torch.no_grad():
        y = nets["generator"](z)
    write_safetensors(os.path.join(outdir, "torch_resmlp.safetensors"), tensors, meta)
    write_safetensors(os.path.join(outdir, "torch_resmlp_io.safetensors"),
                      [("z", z), ("y", y)], {})


def main(argv):
    torch.set_num_threads(1)
    if len(argv) > 2 and argv[1] == "--check-latentd":
        return check_latentd(argv[2])
    if len(argv) > 3 and argv[1] == "--check-model":
        return check_model(argv[2], argv[3])
    outdir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures")
    os.makedirs(outdir, exist_ok=True)
    make(outdir)
    make_steps(outdir)
    make_torch_model(outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
