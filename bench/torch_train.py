#!/usr/bin/python3
"""PyTorch baseline of bench/train_throughput.cc: the same decoder-only model
(vocab 256, d_model 384, 6 layers, 6 heads, sequence 256, batch 8, pre-LN,
GELU tanh, learned positions, tied embeddings, biases, AdamW, clipping at 1.0)
built from nn.TransformerEncoderLayer with a causal mask, trained on the same
bytes. Prints tokens/s in the same format.

  /usr/bin/python3 bench/torch_train.py --threads N --steps N --warmup N
      [--batch N] [--device cpu|cuda] [--matmul fp32|tf32|bf16]

On CUDA, --matmul maps to torch.set_float32_matmul_precision: fp32 "highest",
tf32 "high", bf16 "medium" (bf16 products with fp32 accumulation). On the CPU,
bf16 runs the forward pass under torch.autocast("cpu", torch.bfloat16), which
casts the products' operands to bf16 (oneDNN's kernels); tf32 is fp32 there.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))


def fortunes_bytes():
    d = "/usr/share/games/fortunes"
    out = bytearray()
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if os.path.islink(p) or not os.path.isfile(p):
            continue
        data = open(p, "rb").read()
        if b"\0" not in data:
            out += data
    return bytes(out)


class GPT(nn.Module):
    def __init__(self, V=256, C=384, L=6, H=6, T=256):
        super().__init__()
        self.embed = nn.Embedding(V, C)
        self.pos = nn.Embedding(T, C)
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(C, H, 4 * C, dropout=0.0,
                                       activation=lambda x: F.gelu(x, approximate="tanh"),
                                       batch_first=True, norm_first=True) for _ in range(L)])
        self.norm = nn.LayerNorm(C)
        self.bias = nn.Parameter(torch.zeros(V))
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1), persistent=False)

    def forward(self, x):
        T = x.shape[1]
        h = self.embed(x) + self.pos.weight[:T]
        for layer in self.layers:
            h = layer(h, src_mask=self.mask[:T, :T])
        return F.linear(self.norm(h), self.embed.weight, self.bias)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--matmul", default="fp32", choices=["fp32", "tf32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision({"fp32": "highest", "tf32": "high", "bf16": "medium"}[a.matmul])
    data = torch.frombuffer(bytearray(fortunes_bytes()), dtype=torch.uint8).long()
    model = GPT().to(dev)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "pos" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "embed" not in n and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.98), eps=1e-9)
    B, T = a.batch, 256
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    total, tokens = 0.0, 0
    g = torch.Generator().manual_seed(1)
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        starts = torch.randint(0, (len(data) - T - 1) // T, (B,), generator=g) * T
        batch = torch.stack([data[s:s + T + 1] for s in starts.tolist()]).to(dev)
        x, y = batch[:, :-1], batch[:, 1:]
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dev.type == "cpu" and a.matmul == "bf16"):
            logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, 256), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync()
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            total += dt
            tokens += B * T
    if dev.type == "cuda":
        print(f"torch device={a.device} matmul={a.matmul} batch={B} ", end="")
    print(f"torch threads={a.threads} steps={a.steps} tokens/s={tokens / total:.1f} step_s={total / a.steps:.4f}")


if __name__ == "__main__":
    main()
