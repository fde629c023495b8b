#!/usr/bin/python3
"""Compares `pst debug grads --out DIR` with PyTorch for any configuration.

  build/bin/pst debug grads --config job.toml --seed 1 --out /tmp/g
  tests/reference/check_against_torch.py /tmp/g

Loads pst's initial weights into the torch.nn twin of the model
(pst_torch.py), runs the same batch, and compares the loss, the logits, every
gradient, and the weights after 3 optimizer steps. Exits 1 on a mismatch and
prints the worst entries. Needs Debian's python3-torch (/usr/bin/python3).

Tolerances (fp32 with different summation orders; the same as the C++
fixture tests in tests/model/reference_test.cc):
- loss: 1e-5 relative;
- logits and each gradient tensor: max |pst - torch| <= 1e-4 * max |torch|;
- weights after the steps: see after_tolerance().
"""
import os
import sys

import numpy as np

import pst_torch

LOSS_RTOL = 1e-5
TENSOR_RTOL = 1e-4


def after_tolerance(ref, name, initial):
    """Per-element tolerance on the weights after the optimizer steps.

    Adam divides by sqrt(v), so an element whose gradient is rounding noise
    (mathematically 0, e.g. the key bias of attention) moves by about +-lr
    whatever the noise is; such elements (|g| <= 1e-6 max|g| of the tensor)
    may differ by 2 * sum(lr). Every other element must agree to 1e-4 of the
    tensor's scale plus 1e-3 * sum(lr).
    """
    g = np.abs(ref["grad/" + name])
    lr_sum = float(np.sum(ref["lr"]))
    noise = g <= 1e-6 * max(float(g.max()), 1e-30)
    scale = max(float(np.max(np.abs(ref["after/" + name]))), float(np.max(np.abs(initial[name]))))
    return np.where(noise, 2 * lr_sum, TENSOR_RTOL * scale + 1e-3 * lr_sum)


def compare(name, a, b, bound):
    """Checks |a - b| <= bound elementwise; returns (ok, worst |a-b|/bound)."""
    if a.shape != b.shape:
        print(f"MISMATCH {name}: shape {a.shape} vs torch {b.shape}")
        return False, float("inf")
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    ratio = diff / np.maximum(bound, 1e-30)
    ok = bool(np.all(diff <= bound))
    if not ok:
        bad = np.argwhere(diff > bound)[:5]
        for idx in bad:
            idx = tuple(idx)
            print(f"MISMATCH {name}{list(idx)}: pst {a[idx]:.8g} torch {b[idx]:.8g}")
    return ok, float(ratio.max()) if ratio.size else 0.0


def main():
    d = sys.argv[1]
    job = pst_torch.read_config(os.path.join(d, "config.toml"))
    weights = pst_torch.read_safetensors(os.path.join(d, "weights.safetensors"))
    batch = pst_torch.read_safetensors(os.path.join(d, "batch.safetensors"))
    mine = pst_torch.read_safetensors(os.path.join(d, "pst.safetensors"))
    ref = pst_torch.run_steps(job, weights, batch, 3)
    lerr = abs(float(mine["loss"][0]) - float(ref["loss"][0])) / abs(float(ref["loss"][0]))
    print(f"loss: pst {mine['loss'][0]:.7f} torch {ref['loss'][0]:.7f} relative error {lerr:.2e}")
    ok = lerr <= LOSS_RTOL
    worst = {}
    for key in sorted(ref):
        if key in ("loss", "lr", "grad_norm"):
            continue
        if key.startswith("after/"):
            bound = after_tolerance(ref, key[len("after/"):], weights)
        else:
            bound = TENSOR_RTOL * max(float(np.max(np.abs(ref[key]))), 1e-30)
        good, ratio = compare(key, mine[key], ref[key], bound)
        ok &= good
        kind = key.split("/")[0]
        worst[kind] = max(worst.get(kind, 0.0), ratio)
    for kind, ratio in sorted(worst.items()):
        print(f"{kind}: worst error / tolerance {ratio:.3f}")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
