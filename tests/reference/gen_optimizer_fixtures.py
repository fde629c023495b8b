#!/usr/bin/python3
"""Writes tests/reference/fixtures/optim/*.safetensors from torch.optim,
torch.nn.utils.clip_grad_norm_ and torch.optim.lr_scheduler.

optimizer.safetensors: for AdamW and Adam(weight_decay) on tensors whose
sizes are not multiples of the SIMD width (so vector and tail paths both
run), the parameters after each of 5 steps with given gradients; pst must
match bit for bit.
clip.safetensors: gradients of several tensors, the total norm and the
clipped gradients of clip_grad_norm_.
schedules.safetensors: learning rates of torch's schedulers for 60 steps.
"""
import math
import os

import numpy as np
import torch

import pst_torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "optim")


def optimizer_fixture():
    torch.manual_seed(7)
    out = {}
    sizes = [1003, 37]
    cases = [
        ("adamw", dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.1)),
        ("adamw_nodecay", dict(lr=1e-2, betas=(0.8, 0.999), eps=1e-8, weight_decay=0.0)),
        ("adam", dict(lr=2e-3, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.05)),
    ]
    for name, kw in cases:
        params = [torch.randn(n) for n in sizes]
        grads = [[torch.randn(n) * (0.1 ** k) for n in sizes] for k in range(5)]
        for i, p in enumerate(params):
            out[f"{name}/p{i}/initial"] = p.numpy().copy()
        ps = [p.clone().requires_grad_(True) for p in params]
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = cls(ps, foreach=False, **kw)
        for k in range(5):
            for i, p in enumerate(ps):
                p.grad = grads[k][i].clone()
                out[f"{name}/p{i}/grad{k}"] = grads[k][i].numpy().copy()
            opt.step()
            for i, p in enumerate(ps):
                out[f"{name}/p{i}/after{k}"] = p.detach().numpy().copy()
        out[f"{name}/hyper"] = np.array([kw["lr"], kw["betas"][0], kw["betas"][1], kw["eps"],
                                         kw["weight_decay"]], dtype=np.float32)
    pst_torch.write_safetensors(os.path.join(OUT, "optimizer.safetensors"), out)


def clip_fixture():
    torch.manual_seed(11)
    out = {}
    for case, (scale, max_norm) in enumerate([(1.0, 1.0), (0.01, 1.0), (3.0, 0.25)]):
        grads = [torch.randn(n) * scale for n in (300, 17, 1024)]
        for i, g in enumerate(grads):
            out[f"c{case}/g{i}"] = g.numpy().copy()
        ps = [torch.zeros_like(g, requires_grad=True) for g in grads]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        out[f"c{case}/max_norm"] = np.array([max_norm], dtype=np.float32)
        out[f"c{case}/norm"] = np.array([float(norm)], dtype=np.float32)
        for i, p in enumerate(ps):
            out[f"c{case}/clipped{i}"] = p.grad.numpy().copy()
    pst_torch.write_safetensors(os.path.join(OUT, "clip.safetensors"), out)


def schedules_fixture():
    steps = 60
    out = {}

    def record(name, make, steps=steps):
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([p], lr=0.1)
        sched = make(opt)
        lrs = []
        for _ in range(steps):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        out[name] = np.array(lrs, dtype=np.float64).astype(np.float32)

    S = torch.optim.lr_scheduler
    record("linear", lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.01 / 0.1, total_iters=40))
    record("cosine", lambda o: S.CosineAnnealingLR(o, T_max=40, eta_min=0.01))
    record("step", lambda o: S.StepLR(o, step_size=7, gamma=0.5))
    record("exponential", lambda o: S.ExponentialLR(o, gamma=math.exp(-0.05)))
    record("sgdr", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=0.001))
    record("sgdr1", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=12, T_mult=1, eta_min=0.0))
    # Past restarts where a logarithm's quotient falls short (step 605 for T_0 = 5, T_mult = 3).
    record("sgdr3", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=3, eta_min=0.001), steps=700)
    record("sgdr4", lambda o: S.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=4, eta_min=0.001), steps=700)
    pst_torch.write_safetensors(os.path.join(OUT, "schedules.safetensors"), out)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    optimizer_fixture()
    clip_fixture()
    schedules_fixture()
    print("wrote", OUT)
