#!/usr/bin/env python3
"""A client of latentd's Open Inference Protocol (KServe V2) routes, with the
standard library only: JSON and binary (Triton's binary_tensor_data) infer.

    scripts/v2_client.py http://127.0.0.1:8080 fashion-gan --seed 7 --n 4
    scripts/v2_client.py http://127.0.0.1:8080 fashion-vae --z 0.5,-1,...  --binary
    scripts/v2_client.py URL MODEL --seed 7 --binary --pgm out.pgm

Prints one line per output: its name, shape and the SHA-256 of its values as
little-endian float32, so JSON and binary answers can be compared.  With
--pgm, the first image is written as a PGM file.  The token, if any, comes
from --token or LATENTD_TOKEN.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import urllib.error
import urllib.request

HDR = "Inference-Header-Content-Length"


def infer(url, model, inputs=(), outputs=None, parameters=None, binary=False, token=None):
    """POST /v2/models/MODEL/infer.  inputs: (name, datatype, shape, flat
    values).  With binary, inputs go as binary data and outputs are asked as
    binary.  Returns {name: (shape, flat list of floats)} and the response's
    parameters."""
    req = {"inputs": [], "parameters": dict(parameters or {})}
    blobs = []
    for name, datatype, shape, values in inputs:
        t = {"name": name, "datatype": datatype, "shape": list(shape)}
        if binary:
            code = "<%d%s" % (len(values), "f" if datatype == "FP32" else "i")
            blob = struct.pack(code, *values)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = list(values)
        req["inputs"].append(t)
    if outputs:
        req["outputs"] = [{"name": o, "parameters": {"binary_data": binary}} for o in outputs]
    if binary:
        req["parameters"]["binary_data_output"] = True
    head = json.dumps(req).encode()
    headers = {"Content-Type": "application/json"}
    if blobs:
        headers = {"Content-Type": "application/octet-stream", HDR: str(len(head))}
    if token:
        headers["Authorization"] = "Bearer " + token
    r = urllib.request.Request("%s/v2/models/%s/infer" % (url, model),
                               data=head + b"".join(blobs), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=60) as resp:
            body = resp.read()
            jlen = int(resp.headers.get(HDR) or len(body))
    except urllib.error.HTTPError as e:
        raise SystemExit("HTTP %d: %s" % (e.code, json.loads(e.read()).get("error")))
    answer = json.loads(body[:jlen])
    out, off = {}, jlen
    for o in answer["outputs"]:
        count = 1
        for d in o["shape"]:
            count *= d
        size = o.get("parameters", {}).get("binary_data_size")
        if size is None:
            values = o["data"]
        else:
            values = list(struct.unpack_from("<%df" % count, body, off))
            off += size
        out[o["name"]] = (o["shape"], values)
    return out, answer.get("parameters", {})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("model")
    p.add_argument("--seed", type=int, help="sample: draw z from this seed")
    p.add_argument("--n", type=int, default=1, help="sample: images")
    p.add_argument("--z", help="decode: one latent vector, comma-separated")
    p.add_argument("--binary", action="store_true", help="binary tensors both ways")
    p.add_argument("--pgm", help="write the first image here")
    p.add_argument("--token", default=os.environ.get("LATENTD_TOKEN"))
    a = p.parse_args()
    if a.z:
        z = [float(v) for v in a.z.split(",")]
        out, par = infer(a.url, a.model, [("z", "FP32", [1, len(z)], z)], ["images"],
                         binary=a.binary, token=a.token)
    else:
        params = {"n": a.n}
        if a.seed is not None:
            params["seed"] = a.seed
        out, par = infer(a.url, a.model, (), ["images"], params, binary=a.binary, token=a.token)
    for name, (shape, values) in out.items():
        digest = hashlib.sha256(struct.pack("<%df" % len(values), *values)).hexdigest()
        print(name, "x".join(map(str, shape)), digest)
    if "seed" in par:
        print("seed", par["seed"])
    if a.pgm:
        shape, values = out["images"]
        h, w = shape[1], shape[2]
        pixels = bytes(max(0, min(255, round(v * 255))) for v in values[:h * w])
        with open(a.pgm, "wb") as f:
            f.write(b"P5\n%d %d\n255\n" % (w, h) + pixels)
    return 0


if __name__ == "__main__":
    sys.exit(main())
