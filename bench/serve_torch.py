"""serve_torch.py - the PyTorch peer of `latentd serve` for `make bench-serve`.

The same models (read from the same .safetensors files, parsed here by hand:
8-byte little-endian header length, JSON header, raw little-endian float32
data), served by FastAPI + uvicorn + PyTorch with the same routes and bodies:

  GET  /healthz
  POST /v1/models/{name}/sample   {"n":1,"seed":7,"temperature":1.0,"format":"json"|"png","cols":4}
  POST /v1/models/{name}/decode   {"z":[[...]],"format":"json"|"png"}, or an
                                  application/x-npy body (float32 (n, z)),
                                  answered as .npy (n, 28, 28)

JSON responses have latentd's shape ({"seed","shape","z","images"}); PNG is a
grid with a 2-pixel border like latentd's.  The random stream differs from
latentd's (torch.Generator), which does not matter for throughput.

Run with Debian's interpreter (python3-torch, python3-fastapi, python3-uvicorn):
  LD_BENCH_MODELS=models /usr/bin/python3 bench/serve_torch.py --port 8090 --workers 2
Environment: LD_BENCH_MODELS (model folder, default "models"),
LD_BENCH_TORCH_THREADS (torch threads per worker, default 1).

Why not `uvicorn --workers N`: with several workers uvicorn hands the
listening socket to its children with proto 0, so asyncio skips TCP_NODELAY
on accepted connections (it checks proto == IPPROTO_TCP) and every keep-alive
response waits ~40 ms for Nagle + delayed ACK.  That would measure a
misconfiguration, not PyTorch; so this script forks its own workers over one
listening socket created with IPPROTO_TCP.  Each worker is a plain
single-process uvicorn.Server (h11, asyncio), one per core by default.
"""

import io
import json
import math
import os
import struct

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image

torch.set_num_threads(int(os.environ.get("LD_BENCH_TORCH_THREADS", "1")))
torch.set_grad_enabled(False)


def read_safetensors(path):
    """name -> float32 tensor, and the __metadata__ dict."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(blob)[8 + n:]
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, not F32")
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.float32)
        tensors[name] = t.reshape(info["shape"]).clone()
    return tensors, meta


def activation(meta):
    arch = {}
    try:
        arch = json.loads(meta.get("arch") or meta.get("latentd.arch") or "{}")
    except ValueError:
        pass
    act = arch.get("act", "leaky_relu")
    slope = float(arch.get("slope", 0.2))
    return {
        "leaky_relu": lambda: torch.nn.LeakyReLU(slope),
        "relu": torch.nn.ReLU,
        "tanh": torch.nn.Tanh,
        "sigmoid": torch.nn.Sigmoid,
    }.get(act, lambda: torch.nn.LeakyReLU(slope))


def mlp(tensors, prefix, act, out_act):
    """nn.Sequential of prefix.{i} Linear layers: act between them, out_act last."""
    layers = []
    i = 0
    while f"{prefix}.{i}.weight" in tensors:
        w = tensors[f"{prefix}.{i}.weight"]
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        lin.weight.copy_(w)
        lin.bias.copy_(tensors[f"{prefix}.{i}.bias"])
        layers.append(lin)
        layers.append(act())
        i += 1
    if not layers:
        raise ValueError(f"no {prefix}.0.weight")
    layers[-1] = out_act()
    return torch.nn.Sequential(*layers).eval()


class Model:
    def __init__(self, path):
        tensors, meta = read_safetensors(path)
        act = activation(meta)
        if "decoder.0.weight" in tensors:  # VAE: Bernoulli decoder on logits
            self.kind = "vae"
            self.net = mlp(tensors, "decoder", act, torch.nn.Sigmoid)
            self.z_dim = tensors["decoder.0.weight"].shape[1]
        elif "generator.0.weight" in tensors:  # GAN: sigmoid output
            self.kind = "gan"
            self.net = mlp(tensors, "generator", act, torch.nn.Sigmoid)
            self.z_dim = tensors["generator.0.weight"].shape[1]
        else:
            raise ValueError(f"{path}: neither a VAE nor a GAN")
        x_dim = self.net[-2].out_features
        side = int(math.isqrt(x_dim))
        self.h = self.w = side


MODELS = {}


def load_models():
    folder = os.environ.get("LD_BENCH_MODELS", "models")
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            try:
                MODELS[f[: -len(".safetensors")]] = Model(os.path.join(folder, f))
            except (ValueError, KeyError) as e:
                print(f"serve_torch: skipping {f}: {e}")


app = FastAPI()


@app.on_event("startup")
def startup():
    load_models()  # in each worker, after the fork


def error(status, code, message):
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def png_grid(x, m, cols, pad=2):
    n = x.shape[0]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.zeros(rows * (m.h + pad) + pad, cols * (m.w + pad) + pad)
    imgs = x.reshape(n, m.h, m.w)
    for i in range(n):
        r, c = divmod(i, cols)
        y0, x0 = pad + r * (m.h + pad), pad + c * (m.w + pad)
        grid[y0:y0 + m.h, x0:x0 + m.w] = imgs[i]
    arr = (grid.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def images_response(m, body, z, x, extra):
    fmt = body.get("format", "json")
    if fmt == "png":
        return Response(png_grid(x, m, body.get("cols", 0)), media_type="image/png")
    if fmt != "json":
        return error(422, "invalid_value", "format must be json or png")
    out = dict(extra)
    out["shape"] = [x.shape[0], m.h, m.w]
    if z is not None:
        out["z"] = z.tolist()
    out["images"] = x.tolist()
    return JSONResponse(out)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.post("/v1/models/{name}/sample")
async def sample(name: str, request: Request):
    m = MODELS.get(name)
    if m is None:
        return error(404, "model_not_found", f"no model named '{name}' is loaded")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "invalid_json", "the body is not valid JSON")
    n = body.get("n", 1)
    seed = body.get("seed", 0)
    temp = float(body.get("temperature", 1.0))
    if not isinstance(n, int) or not 1 <= n <= 256:
        return error(422, "invalid_value", "n out of range")
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n, m.z_dim, generator=g) * temp
    x = m.net(z)
    return images_response(m, body, z, x, {"model": name, "seed": seed, "temperature": temp})


@app.post("/v1/models/{name}/decode")
async def decode(name: str, request: Request):
    m = MODELS.get(name)
    if m is None:
        return error(404, "model_not_found", f"no model named '{name}' is loaded")
    if request.headers.get("content-type", "").startswith("application/x-npy"):
        try:
            z = torch.from_numpy(np.load(io.BytesIO(await request.body()), allow_pickle=False))
        except ValueError:
            return error(400, "invalid_npy", "the body is not a .npy array")
        if z.dtype != torch.float32 or z.dim() != 2 or z.shape[1] != m.z_dim:
            return error(422, "invalid_value", f"z must be float32 (n, {m.z_dim})")
        x = m.net(z).detach().reshape(-1, m.h, m.w).numpy()
        buf = io.BytesIO()
        np.save(buf, x)
        return Response(buf.getvalue(), media_type="application/octet-stream")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "invalid_json", "the body is not valid JSON")
    try:
        z = torch.tensor(body["z"], dtype=torch.float32)
    except (KeyError, TypeError, ValueError):
        raise HTTPException(400, "z must be an array of arrays of numbers")
    if z.dim() == 1:
        z = z.unsqueeze(0)
    if z.dim() != 2 or z.shape[1] != m.z_dim or not torch.isfinite(z).all():
        return error(422, "invalid_value", f"z rows must hold {m.z_dim} finite values")
    x = m.net(z)
    return images_response(m, body, None, x, {"model": name})


def main():
    import argparse
    import signal
    import socket

    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((a.host, a.port))
    sock.listen(1024)
    children = []
    for _ in range(max(1, a.workers)):
        pid = os.fork()
        if pid == 0:
            config = uvicorn.Config(app, log_level="warning", access_log=False)
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)

    def stop(signum, frame):
        for c in children:
            try:
                os.kill(c, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for c in children:
        os.waitpid(c, 0)


if __name__ == "__main__":
    main()
