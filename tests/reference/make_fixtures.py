#!/usr/bin/python3
"""make_fixtures.py — PyTorch reference fixtures for tests/check_parity.c.

Run with Debian's python3-torch (1.13), only when the fixtures must change:

    /usr/bin/python3 tests/reference/make_fixtures.py tests/fixtures      (= make fixtures)

It builds PyTorch modules equivalent to latentd's DEFAULT models, with fixed
seeds, runs three training steps of each on batches of B = 8 real Fashion-MNIST
training images, and writes what the C test needs to redo the same
computation and compare every output and gradient:

  vae_init.safetensors   the VAE's initial state dict, exactly as torch names
                         it (encoder.{i}.*, mu.*, logvar.*, decoder.{i}.*), with
                         NO __metadata__: latentd must infer the architecture.
  vae_ref.safetensors    x.{s} (8,784) and eps.{s} (8,20) for steps s = 0,1,2;
                         loss.{s} = [loss, rec_sum, kl_sum]; grad.<name> = every
                         gradient of step 0, in full; after.<name> (+ idx.<name>)
                         = parameters after 3 Adam steps at a deterministic
                         subset of entries, dnorm.<name> = [L1, L2, max] norms
                         of (after - init) over the FULL tensor;
                         dec.z (8,20) -> dec.x (8,784) = sigmoid(decoder(z)),
                         enc.mu / enc.logvar (8,20) = heads on x.0.
  gan_init.safetensors   the GAN's initial state dict (generator.{i}.*,
                         discriminator.{i}.*) with {"format": "pt"} metadata, as
                         safetensors.torch.save_file writes it.
  gan_ref.safetensors    real.{s} (8,784), z.{s} (8,100), dropout masks
                         mask_real.{s}, mask_fake.{s}, mask_g.{s} (D's masks for
                         its forward on real, on fake for the D loss, and on fake
                         for the G loss; per hidden layer i a (B, size[i+1])
                         block, concatenated: B*512 + B*256 floats);
                         loss.{s} = [loss_D, loss_G, mean D(real), mean D(fake)];
                         grad.<name> at idx.<name> (step 0; D's from the D loss,
                         G's from the G loss), gnorm.<name> = [L1, L2, max] of the
                         FULL gradient; after.<name> / dnorm.<name> as for the
                         VAE; dec.z (8,100) -> dec.x (8,784) = G(z).

Sizes: the GAN's weights alone are 1.09M floats (4.4 MB), so GAN gradients and
all post-step parameters are stored on a subset (every entry of tensors up to
4096 elements, else 2048 entries drawn without replacement by a fixed-seed
numpy generator; the indices are stored as exact float32 integers), plus
full-tensor norms that catch an error anywhere.  VAE gradients are stored in full.

All files are safetensors written by hand (no safetensors package here):
u64 LE header length, JSON header padded with spaces to a multiple of 8, raw
little-endian float32.  The C test reads them with latentd's own ld_ckpt_read.

Model details (must match src/vae.c, src/gan.c, include/latentd/*.h):
  VAE  encoder 784->128->64, leaky ReLU 0.2 after each layer; mu, logvar 64->20;
       z = mu + exp(logvar/2) * eps; decoder 20->64->128->784, leaky ReLU on
       hidden layers, logits out; loss = (BCE-with-logits summed + KL) / B,
       KL = -1/2 sum(1 + logvar - mu^2 - e^logvar); Adam lr 1e-3, (0.9, 0.999).
  GAN  G 100->256->512->784 leaky 0.2, sigmoid out; D 784->512->256->1 leaky 0.2,
       inverted dropout 0.3 after each hidden activation (explicit masks);
       fake = G(z); loss_D = mean BCE(D(real), 0.9) + mean BCE(D(fake.detach()), 0);
       D's Adam step; then loss_G = mean BCE(D(fake), 1) (non-saturating) and G's
       Adam step.  Adam lr 2e-4, betas (0.5, 0.999), eps 1e-8, both nets.

--check-latentd FILE...  instead loads checkpoints written by latentd's
ld_model_save into the equivalent module (strict state-dict load) and runs a
forward pass: the reverse direction of the parity test.
"""

import gzip
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

B = 8
STEPS = 3
SLOPE = 0.2
MNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
SUBSET_FULL = 4096  # tensors up to this size are stored whole
SUBSET_N = 2048     # else this many entries


# ---- safetensors, by hand --------------------------------------------------

def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, array-like); written as F32 in the given order."""
    header, blobs, off = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors:
        assert name not in header, f"tensor {name} written twice"
        a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        b0, b1 = e["data_offsets"]
        out[name] = np.frombuffer(data[b0:b1], dtype="<f4").reshape(e["shape"]).copy()
    return out, meta


# ---- the modules -----------------------------------------------------------

def linears(sizes):
    return nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1))


class VAE(nn.Module):
    def __init__(self, x=784, enc=(128, 64), z=20, dec=(64, 128)):
        super().__init__()
        self.encoder = linears([x, *enc])
        self.mu = nn.Linear(enc[-1], z)
        self.logvar = nn.Linear(enc[-1], z)
        self.decoder = linears([z, *dec, x])

    def encode(self, x):
        h = x
        for layer in self.encoder:  # activation after EVERY encoder layer
            h = F.leaky_relu(layer(h), SLOPE)
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z):
        h = z
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i + 1 < len(self.decoder):
                h = F.leaky_relu(h, SLOPE)
        return h

    def losses(self, x, eps):
        mu, lv = self.encode(x)
        z = mu + torch.exp(0.5 * lv) * eps
        logits = self.decode_logits(z)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
        return rec, kl


class GAN(nn.Module):
    def __init__(self, z=100, g=(256, 512), x=784, d=(512, 256), dropout=0.3):
        super().__init__()
        self.generator = linears([z, *g, x])
        self.discriminator = linears([x, *d, 1])
        self.dropout = dropout

    def G(self, z):
        h = z
        for i, layer in enumerate(self.generator):
            h = layer(h)
            h = F.leaky_relu(h, SLOPE) if i + 1 < len(self.generator) else torch.sigmoid(h)
        return h

    def D(self, x, masks):
        """masks: list of (B, width) tensors, one per hidden layer, or None (eval)."""
        h = x
        for i, layer in enumerate(self.discriminator):
            h = layer(h)
            if i + 1 < len(self.discriminator):
                h = F.leaky_relu(h, SLOPE)
                if masks is not None:
                    h = h * masks[i]
        return h

    def hidden_d(self):
        return [l.out_features for l in self.discriminator][:-1]

    def draw_masks(self, gen, b):
        keep = np.float32(1.0) / (np.float32(1.0) - np.float32(self.dropout))
        return [(torch.rand(b, w, generator=gen) >= self.dropout).float() * float(keep)
                for w in self.hidden_d()]


def flat_masks(masks):
    return torch.cat([m.reshape(-1) for m in masks]).numpy()


def adam(params, lr, betas):
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, foreach=False)


# ---- data ------------------------------------------------------------------

def fashion_images(first, n):
    with gzip.open(MNIST, "rb") as f:
        buf = f.read()
    magic, count, rows, cols = struct.unpack(">IIII", buf[:16])
    assert magic == 2051 and rows == 28 and cols == 28 and first + n <= count
    px = np.frombuffer(buf, dtype=np.uint8, offset=16 + first * 784, count=n * 784)
    return (px.astype(np.float32) / np.float32(255.0)).reshape(n, 784)


# ---- subsets and norms -------------------------------------------------------

def subset_indices(name, numel):
    if numel <= SUBSET_FULL:
        return np.arange(numel)
    seed = sum(name.encode()) * 7919 + numel  # fixed per tensor, documented
    rs = np.random.RandomState(seed % (2**32))
    return np.sort(rs.choice(numel, SUBSET_N, replace=False))


def norms(a):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    return np.array([np.abs(a).sum(), np.sqrt((a * a).sum()), np.abs(a).max()])


def state(module):
    return [(k, v.detach().numpy().copy()) for k, v in module.state_dict().items()]


# ---- the VAE ---------------------------------------------------------------

def make_vae(outdir):
    torch.manual_seed(1234)
    vae = VAE()
    init = state(vae)
    write_safetensors(os.path.join(outdir, "vae_init.safetensors"), init)  # no metadata

    gen = torch.Generator().manual_seed(42)
    xs = torch.from_numpy(fashion_images(0, STEPS * B)).reshape(STEPS, B, 784)
    out = []
    opt = adam(vae.parameters(), 1e-3, (0.9, 0.999))
    for s in range(STEPS):
        x = xs[s]
        eps = torch.randn(B, 20, generator=gen)
        opt.zero_grad(set_to_none=False)
        rec, kl = vae.losses(x, eps)
        loss = (rec + kl) / B
        loss.backward()
        out += [(f"x.{s}", x.numpy()), (f"eps.{s}", eps.numpy()),
                (f"loss.{s}", np.array([loss.item(), rec.item(), kl.item()]))]
        if s == 0:
            out += [(f"grad.{k}", p.grad.numpy().copy()) for k, p in vae.named_parameters()]
        opt.step()
        print(f"vae step {s}: loss {loss.item():.6f} rec {rec.item():.4f} kl {kl.item():.6f}")
    out += after_params(vae, init, out)

    # The sample and encode paths, with the initial weights.
    vae.load_state_dict({k: torch.from_numpy(v) for k, v in init})
    with torch.no_grad():
        z = torch.randn(B, 20, generator=gen)
        out += [("dec.z", z.numpy()), ("dec.x", torch.sigmoid(vae.decode_logits(z)).numpy())]
        mu, lv = vae.encode(xs[0])
        out += [("enc.mu", mu.numpy()), ("enc.logvar", lv.numpy())]
    write_safetensors(os.path.join(outdir, "vae_ref.safetensors"), out,
                      {"source": "tests/reference/make_fixtures.py", "torch": torch.__version__})


def after_params(module, init, have):
    """have: the entries written so far (idx.<name> is shared with grad.<name>)."""
    init = dict(init)
    names = {n for n, _ in have}
    out = []
    for k, v in module.state_dict().items():
        a = v.detach().numpy().reshape(-1)
        idx = subset_indices(k, a.size)
        if f"idx.{k}" not in names:
            out.append((f"idx.{k}", idx.astype(np.float32)))
        out += [(f"after.{k}", a[idx]), (f"dnorm.{k}", norms(a - init[k].reshape(-1)))]
    return out


# ---- the GAN ---------------------------------------------------------------

def make_gan(outdir):
    torch.manual_seed(4321)
    gan = GAN()
    init = state(gan)
    write_safetensors(os.path.join(outdir, "gan_init.safetensors"), init, {"format": "pt"})

    gen = torch.Generator().manual_seed(7)
    reals = torch.from_numpy(fashion_images(100, STEPS * B)).reshape(STEPS, B, 784)
    G_params = list(gan.generator.parameters())
    D_params = list(gan.discriminator.parameters())
    opt_g = adam(G_params, 2e-4, (0.5, 0.999))
    opt_d = adam(D_params, 2e-4, (0.5, 0.999))
    out = []
    for s in range(STEPS):
        real = reals[s]
        z = torch.randn(B, 100, generator=gen)
        m_real = gan.draw_masks(gen, B)
        m_fake = gan.draw_masks(gen, B)
        m_g = gan.draw_masks(gen, B)

        fake = gan.G(z)
        opt_d.zero_grad(set_to_none=False)
        l_real = gan.D(real, m_real)
        l_fake = gan.D(fake.detach(), m_fake)
        loss_d = (F.binary_cross_entropy_with_logits(l_real, torch.full_like(l_real, 0.9)) +
                  F.binary_cross_entropy_with_logits(l_fake, torch.zeros_like(l_fake)))
        loss_d.backward()
        if s == 0:
            out += grads_subset(gan.discriminator, "discriminator")
        opt_d.step()

        opt_g.zero_grad(set_to_none=False)
        l_g = gan.D(fake, m_g)
        loss_g = F.binary_cross_entropy_with_logits(l_g, torch.ones_like(l_g))
        loss_g.backward()
        if s == 0:
            out += grads_subset(gan.generator, "generator")
        opt_g.step()

        p_real = torch.sigmoid(l_real).mean().item()
        p_fake = torch.sigmoid(l_fake).mean().item()
        out += [(f"real.{s}", real.numpy()), (f"z.{s}", z.numpy()),
                (f"mask_real.{s}", flat_masks(m_real)), (f"mask_fake.{s}", flat_masks(m_fake)),
                (f"mask_g.{s}", flat_masks(m_g)),
                (f"loss.{s}", np.array([loss_d.item(), loss_g.item(), p_real, p_fake]))]
        print(f"gan step {s}: loss_D {loss_d.item():.6f} loss_G {loss_g.item():.6f} "
              f"D(real) {p_real:.4f} D(fake) {p_fake:.4f}")
    out += after_params(gan, init, out)

    gan.load_state_dict({k: torch.from_numpy(v) for k, v in init})
    with torch.no_grad():
        z = torch.randn(B, 100, generator=gen)
        out += [("dec.z", z.numpy()), ("dec.x", gan.G(z).numpy())]
    write_safetensors(os.path.join(outdir, "gan_ref.safetensors"), out,
                      {"source": "tests/reference/make_fixtures.py", "torch": torch.__version__})


def grads_subset(net, prefix):
    out = []
    for k, p in net.named_parameters():
        name = f"{prefix}.{k}"
        g = p.grad.numpy().reshape(-1)
        idx = subset_indices(name, g.size)
        out += [(f"idx.{name}", idx.astype(np.float32)), (f"grad.{name}", g[idx]),
                (f"gnorm.{name}", norms(g))]
    return out


# ---- self-check and the reverse direction ----------------------------------

def self_check(outdir):
    """Reload what was written into fresh modules (strict): the names and
    shapes are exactly a torch state dict's."""
    for fname, cls in (("vae_init.safetensors", VAE), ("gan_init.safetensors", GAN)):
        t, _ = read_safetensors(os.path.join(outdir, fname))
        m = cls()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in t.items()}, strict=True)


def check_latentd(paths):
    """Load checkpoints written by latentd (ld_model_save) into the equivalent
    module: strict names and shapes, finite outputs."""
    for p in paths:
        t, meta = read_safetensors(p)
        kind = meta.get("kind")
        arch = json.loads(meta["arch"]) if "arch" in meta else {}
        if kind == "vae":
            m = VAE(arch["image"][0] * arch["image"][1], tuple(arch["encoder"]), arch["z"],
                    tuple(arch["decoder"]))
        elif kind == "gan":
            m = GAN(arch["z"], tuple(arch["generator"]), arch["image"][0] * arch["image"][1],
                    tuple(arch["discriminator"]), arch.get("dropout", 0.0))
        else:
            print(f"{p}: kind {kind} has no reference module here; skipped")
            continue
        m.load_state_dict({k: torch.from_numpy(v) for k, v in t.items()}, strict=True)
        with torch.no_grad():
            if kind == "vae":
                y = torch.sigmoid(m.decode_logits(torch.randn(4, arch["z"])))
            else:
                y = m.G(torch.randn(4, arch["z"]))
        assert torch.isfinite(y).all()
        print(f"{p}: loaded into the torch {kind} module ({len(t)} tensors), forward ok")


def main(argv):
    torch.set_num_threads(1)
    if len(argv) > 1 and argv[1] == "--check-latentd":
        check_latentd(argv[2:])
        return 0
    outdir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures")
    os.makedirs(outdir, exist_ok=True)
    make_vae(outdir)
    make_gan(outdir)
    self_check(outdir)
    for f in sorted(os.listdir(outdir)):
        print(f"{os.path.join(outdir, f)}: {os.path.getsize(os.path.join(outdir, f))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
