#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets into tests/corpus/<target>/.

Standard library only (PNGs, IDX and safetensors files are written by hand),
so the seeds can be remade anywhere: python3 tests/fuzz/make_corpus.py.
Inputs that fuzzing found (crashes, fixed since) are added to the same
folders by hand, named crash-<what>, and are not written here."""
import gzip, json, os, struct, sys, zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors --------------------------------------------------------------

def safetensors(tensors, meta=None):
    """tensors: [(name, shape, floats)] in data order."""
    header, data, off = {}, b"", 0
    if meta:
        header["__metadata__"] = meta
    for name, shape, vals in tensors:
        raw = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def dense(prefix, sizes, indexed=True):
    out = []
    for i in range(len(sizes) - 1):
        p = "%s.%d" % (prefix, i) if indexed else prefix
        n_in, n_out = sizes[i], sizes[i + 1]
        out.append((p + ".weight", [n_out, n_in], [0.01 * ((k % 7) - 3) for k in range(n_in * n_out)]))
        out.append((p + ".bias", [n_out], [0.0] * n_out))
    return out


def vae_tensors():
    return (dense("encoder", [16, 8]) + dense("mu", [8, 2], False) + dense("logvar", [8, 2], False)
            + dense("decoder", [2, 8, 16]))


VAE_ARCH = json.dumps({"kind": "vae", "image": [4, 4], "z": 2, "decoder": [8], "encoder": [8],
                       "act": "leaky_relu", "slope": 0.2, "dropout": 0}, separators=(",", ":"))


def ckpt_seeds():
    put("ckpt", "vae-latentd", safetensors(vae_tensors(), {"format": "latentd/1", "kind": "vae",
                                                          "arch": VAE_ARCH, "epochs": "1"}))
    put("ckpt", "vae-pytorch", safetensors(vae_tensors()))
    put("ckpt", "gan-pytorch", safetensors(dense("generator", [2, 8, 16]) + dense("discriminator", [16, 8, 1])))
    put("ckpt", "classifier", safetensors(dense("classifier", [16, 8, 3])))
    state = vae_tensors()
    for block in ("adam_m.", "adam_v."):
        state += [(block + n, s, v) for n, s, v in vae_tensors()]
    put("ckpt", "vae-state", safetensors(state, {"format": "latentd-state/1", "kind": "vae",
                                                 "arch": VAE_ARCH, "step": "0", "epoch": "0"}))
    put("ckpt", "empty", safetensors([]))


# ---- IDX ------------------------------------------------------------------------

def idx_images(n, h, w):
    return struct.pack(">IIII", 0x803, n, h, w) + bytes((i * 37) % 256 for i in range(n * h * w))


def idx_seeds():
    put("idx", "images-3x4x4", idx_images(3, 4, 4))
    put("idx", "images-1x28x28", idx_images(1, 28, 28))
    put("idx", "images-2x3x5.gz", gzip.compress(idx_images(2, 3, 5), mtime=0))


# ---- PNG ------------------------------------------------------------------------

def png(w, h, color, depth, rows, chunks=(), interlace=0):
    """rows: the raw scanlines (without filter bytes) of a non-interlaced image,
    or the whole filtered stream when interlace is set."""
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = rows if interlace else b"".join(b"\0" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, interlace))
    for t, d in chunks:
        out += chunk(t, d)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_seeds():
    put("png", "gray8", png(4, 4, 0, 8, [bytes(range(r * 60, r * 60 + 4)) for r in range(4)]))
    put("png", "gray16", png(2, 2, 0, 16, [b"\x80\x80\xff\xff", b"\x00\x00\x12\x34"]))
    put("png", "gray8-gama", png(3, 1, 0, 8, [b"\x00\x80\xff"], [(b"gAMA", struct.pack(">I", 100000))]))
    put("png", "rgb8", png(2, 2, 2, 8, [b"\xff\x00\x00\x00\xff\x00", b"\x00\x00\xff\x80\x80\x80"]))
    put("png", "rgba16", png(1, 1, 6, 16, [b"\x10\x00\x20\x00\x30\x00\x00\x00"]))
    put("png", "gray-alpha8", png(2, 1, 4, 8, [b"\xc8\xff\xc8\x00"]))
    put("png", "palette2-trns", png(4, 1, 3, 2, [b"\x1b"],
                                    [(b"PLTE", b"\x00\x00\x00\xff\xff\xff\xff\x00\x00\x3c\x3c\x3c"),
                                     (b"tRNS", b"\x00\x00")]))
    put("png", "gray1", png(8, 2, 0, 1, [b"\xa5", b"\x5a"]))
    # Adam7 of a 1x1 image: only pass 1 has data, one filtered row of one byte
    put("png", "interlaced-1x1", png(1, 1, 0, 8, b"\x00\x7f", interlace=1))


# ---- config, job specs and request bodies -----------------------------------------

def text_seeds():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(here, "config", "latentd.conf"), "rb") as f:
        put("config", "latentd.conf", f.read())
    put("config", "small", 'bind = 127.0.0.1\nport = 8080\nmodel_dir = "/tmp/models"  # here\n\n# x\n')
    put("config", "quoted", 'log_level = "debug"\ncors_origins = "a, b \\"c\\""\n')

    put("jobspec", "vae", '{"kind":"vae","model":"my-vae","data":"fashion-mnist","limit":600,'
        '"arch":{"hidden":[128,64],"z":20},"train":{"epochs":1,"batch":128,"lr":0.001,"seed":1},'
        '"checkpoint_every":500}')
    put("jobspec", "gan", '{"kind":"gan","model":"my-gan","arch":{"g_hidden":[256,512],'
        '"d_hidden":[512,256],"z":100},"train":{"epochs":2,"batch":64,"lr":0.0002,"lr_d":0.0002,'
        '"loss":"ns","real_label":0.9}}')
    put("jobspec", "quick", '{"kind":"vae","model":"quick","limit":2000,"arch":{"hidden":[32],"z":4},'
        '"train":{"epochs":1,"kl_beta":0.5}}')
    put("jobspec", "article", '{"kind":"gan","model":"a","arch":"article","data":"digits"}')
    put("jobspec", "ranks", '{"kind":"vae","model":"r","train":{"batch":32},"ranks":2}')

    img = "[" + ",".join("0.5" for _ in range(16)) + "]"
    b64 = __import__("base64").b64encode(png(4, 4, 0, 8, [b"\x10\x20\x30\x40"] * 4)).decode()
    put("sample", "empty", "")
    put("sample", "all", '{"n":2,"seed":7,"temperature":0.8,"format":"json"}')
    put("sample", "png", '{"n":4,"seed":1,"format":"png","cols":2,"pad":1}')
    put("sample", "npy", '{"n":3,"format":"npy"} ')
    put("decode", "json", '{"z":[[0.1,-0.2],[1,2]]}')
    put("decode", "flat-png", '{"z":[0.5,0.5],"format":"png","cols":1,"pad":0}')
    put("decode", "npy", '{"z":[[1e3,-1e3]],"format":"npy"}')
    put("encode", "images", '{"images":[%s,%s]}' % (img, img))
    put("encode", "flat", '{"images":%s}' % img)
    put("encode", "png", '{"png":"%s"}' % b64)
    put("encode", "pngs", '{"png":["%s","%s"],"format":"png"}' % (b64, b64))
    put("interpolate", "seeds", '{"from":{"seed":1},"to":{"seed":2,"temperature":0.5},"steps":3}')
    put("interpolate", "z", '{"from":{"z":[0,1]},"to":{"z":[1,0]},"method":"lerp","format":"png"}')
    put("interpolate", "image", '{"from":{"image":%s},"to":{"png":"%s"},"steps":4,"format":"npy"}'
        % (img, b64))


# ---- .npy bodies, /v2 bodies and request heads ------------------------------------

def npy(shape, vals, descr="<f4", fortran=False):
    """A NumPy v1.0 file as numpy writes it (header padded to 64 bytes)."""
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, dims)
    pad = 64 - (10 + len(d) + 1) % 64
    h = d + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + struct.pack("<%df" % len(vals), *vals)


def npy_seeds():
    # fuzz_npy: (size / 8) % 6 picks the route (decode, encode, reconstruct)
    # and the model (VAE, GAN); seeds of several row counts cover them
    for n in range(1, 7):
        put("npy", "z-%d" % n, npy([n, 2], [0.25 * k for k in range(2 * n)]))
        put("npy", "images-%dx4x4" % n, npy([n, 4, 4], [(k % 16) / 15 for k in range(16 * n)]))
        put("npy", "images-%dx16" % n, npy([n, 16], [0.5] * (16 * n)))
    put("npy", "f8", npy([1, 2], [0, 0], descr="<f8")[:-8] + struct.pack("<2d", 0.5, 0.5))
    put("npy", "fortran", npy([2, 2], [0, 1, 2, 3], fortran=True))
    put("npy", "scalar", npy([], [1.5]))


def v2_seeds():
    # fuzz_v2: byte 0 bit 0 the model (1: GAN), bit 1 the binary extension
    # (then two bytes of JSON length, little-endian, before the body)
    def js(o):
        return json.dumps(o, separators=(",", ":"))
    z = {"name": "z", "datatype": "FP32", "shape": [2, 2], "data": [0.1, -0.2, 1, 2]}
    img = {"name": "images", "datatype": "FP32", "shape": [1, 4, 4], "data": [[0.5] * 4] * 4}
    for m, tag in ((0, "vae"), (1, "gan")):
        put("v2", "z-" + tag, bytes([m]) + js({"id": "a", "inputs": [z]}).encode())
        put("v2", "sample-" + tag, bytes([m]) + js({"parameters": {"seed": 3, "n": 2,
                                                                     "temperature": 0.5}}).encode())
        head = js({"inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 2],
                               "parameters": {"binary_data_size": 8}}],
                   "parameters": {"binary_data_output": True}}).encode()
        put("v2", "binary-z-" + tag, bytes([m | 2]) + struct.pack("<H", len(head)) + head
            + struct.pack("<2f", 0.5, -0.5))
        # the form v2.c's lean reader takes (bench-serve's v2-binary point)
        head = js({"id": "b", "inputs": [{"name": "z", "datatype": "FP32", "shape": [1, 2],
                                          "parameters": {"binary_data_size": 8}}],
                   "outputs": [{"name": "images", "parameters": {"binary_data": True}}]}).encode()
        put("v2", "lean-z-" + tag, bytes([m | 2]) + struct.pack("<H", len(head)) + head
            + struct.pack("<2f", 0.5, -0.5))
    put("v2", "images-outputs", b"\0" + js({"inputs": [img], "outputs": [
        {"name": "mu"}, {"name": "logvar", "parameters": {"binary_data": True}},
        {"name": "images"}]}).encode())
    head = js({"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 4, 4],
                           "parameters": {"binary_data_size": 64}}]}).encode()
    put("v2", "binary-images", b"\2" + struct.pack("<H", len(head)) + head
        + struct.pack("<16f", *[k / 16 for k in range(16)]))


def head_seeds():
    put("head", "get", "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    put("head", "post", "POST /v1/models/m/decode?format=npy HTTP/1.1\r\nHost: t\r\n"
        "Content-Type: application/x-npy\r\nContent-Length: 128\r\n\r\n")
    put("head", "lf-only", "GET / HTTP/1.0\nX-A: b\n\n")
    put("head", "cl-abc", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n")
    put("head", "cl-two", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
        "content-length:  3 \r\n\r\n")
    put("head", "no-host", "GET /healthz HTTP/1.1\r\n\r\n")
    put("head", "params", "GET /healthz?" + "&".join("a%d=1" % i for i in range(70)) + " HTTP/1.1\r\n\r\n")
    put("head", "folded", "GET / HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n")
    put("head", "partial", "GET /v1/jobs HTTP/1.1\r\nHost: t\r\nAuthor")


if __name__ == "__main__":
    ckpt_seeds()
    idx_seeds()
    png_seeds()
    text_seeds()
    npy_seeds()
    v2_seeds()
    head_seeds()
    print("corpora written to", os.path.normpath(ROOT), file=sys.stderr)
