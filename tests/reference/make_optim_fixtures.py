#!/usr/bin/python3
"""make_optim_fixtures.py — PyTorch's optimisers and schedulers on a small
parameter vector, for tests/check_optim.c.

Run with Debian's python3-torch (1.13), only when the fixture must change:

    /usr/bin/python3 tests/reference/make_optim_fixtures.py tests/fixtures   (= make fixtures)

For each case below: a vector p of N = 8 float32 parameters (one of them 0,
where sign(0) = 0 matters for L1), S = 6 steps with given gradients g.{s},
torch.optim.<Optimizer> and a scheduler stepped once after every update
(CosineAnnealingLR with T_max = S, or StepLR), and an L1 penalty taken by
autograd from l1 * |p|.sum().  Written to optim.safetensors:

  <case>.p0     (N)     the start
  <case>.g      (S, N)  the gradients of the loss without the penalty
  <case>.after  (S, N)  p after each update
  <case>.lr     (S)     the rate each update used (float32 of torch's double)

The case table is repeated in tests/check_optim.c (the metadata names them).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import write_safetensors  # noqa: E402

N, S = 8, 6

# name: (optimizer, kwargs, schedule, schedule kwargs, l1)
CASES = [
    ("adam_l2", "Adam", dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1),
     "constant", {}, 0.0),
    ("adamw_cosine", "AdamW", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05),
     "cosine", {}, 0.0),
    ("adam_l1_step", "Adam", dict(lr=2e-3, betas=(0.5, 0.999), eps=1e-8),
     "step", dict(step_size=2, gamma=0.5), 0.01),
    ("sgd_momentum_step", "SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01),
     "step", dict(step_size=4, gamma=0.1), 0.0),
    ("sgd_nesterov_cosine", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3),
     "cosine", {}, 0.02),
    ("sgd_plain", "SGD", dict(lr=0.1), "constant", {}, 0.0),
]


def run(case, rng):
    name, opt, kw, sched, skw, l1 = case
    p0 = rng.uniform(-2, 2, N).astype(np.float32)
    p0[3] = 0.0
    g = rng.normal(0, 1, (S, N)).astype(np.float32)
    g[:, 5] *= 1e-3  # small gradients, where eps and decay dominate
    p = torch.tensor(p0, requires_grad=True)
    o = getattr(torch.optim, opt)([p], **kw)
    if sched == "cosine":
        s = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=S)
    elif sched == "step":
        s = torch.optim.lr_scheduler.StepLR(o, **skw)
    else:
        s = None
    after, lrs = [], []
    for k in range(S):
        o.zero_grad()
        loss = (p * torch.from_numpy(g[k])).sum() + l1 * p.abs().sum()
        loss.backward()
        lrs.append(o.param_groups[0]["lr"])
        o.step()
        if s is not None:
            s.step()
        after.append(p.detach().numpy().copy())
    return [(name + ".p0", p0), (name + ".g", g), (name + ".after", np.stack(after)),
            (name + ".lr", np.array(lrs))]


def main(argv):
    torch.set_num_threads(1)
    outdir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures")
    rng = np.random.default_rng(16)
    tensors = []
    for c in CASES:
        tensors += run(c, rng)
    meta = {"cases": ",".join(c[0] for c in CASES), "torch": torch.__version__}
    path = os.path.join(outdir, "optim.safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
