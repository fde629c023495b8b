#!/usr/bin/python3
"""Regenerates the PyTorch fixtures in tests/reference/fixtures/.

For each config in tests/reference/configs/, `pst debug grads` writes pst's
initial weights and one real batch into fixtures/<name>/; this script then
runs the same model in PyTorch (pst_torch.py) and writes torch.safetensors
beside them: the loss, logits and every gradient of the first step, and the
weights after 3 steps of clip_grad_norm_ + AdamW under the warmup schedule.
pst's own outputs (pst.safetensors) are not committed: the C++ tests
recompute them.

Usage: tests/reference/gen_fixtures.py BUILD/bin/pst [NAME...]   (Debian's python3-torch)
With NAMEs, only those configs (e.g. lm_modern) are regenerated.
"""
import os
import subprocess
import sys

import pst_torch

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    pst = sys.argv[1] if len(sys.argv) > 1 else "build/bin/pst"
    configs = sorted(f for f in os.listdir(os.path.join(HERE, "configs")) if f.endswith(".toml"))
    if len(sys.argv) > 2:
        configs = [c for c in configs if c[:-5] in sys.argv[2:]]
    for cfg in configs:
        name = cfg[:-5]
        out = os.path.join(HERE, "fixtures", name)
        subprocess.run([pst, "debug", "grads", "--config", os.path.join(HERE, "configs", cfg),
                        "--seed", "1", "--out", out], check=True)
        job = pst_torch.read_config(os.path.join(out, "config.toml"))
        weights = pst_torch.read_safetensors(os.path.join(out, "weights.safetensors"))
        batch = pst_torch.read_safetensors(os.path.join(out, "batch.safetensors"))
        res = pst_torch.run_steps(job, weights, batch, 3)
        pst_torch.write_safetensors(os.path.join(out, "torch.safetensors"), res)
        os.remove(os.path.join(out, "pst.safetensors"))
        print(f"{name}: loss {res['loss'][0]:.6f}")


if __name__ == "__main__":
    main()
