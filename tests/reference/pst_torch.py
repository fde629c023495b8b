"""PyTorch twins of pst's models, built from torch.nn's own modules.

pst's parameter names are the names these modules give their parameters, so a
pst weights file loads with load_state_dict (the mapping is in docs/design.md):

  encoder-decoder                   decoder-only
  src_embed / tgt_embed (Embedding) embed (Embedding)
  src_pos / tgt_pos (Embedding)     pos (Embedding), learned positions only
  encoder = nn.TransformerEncoder   layers = ModuleList of nn.TransformerEncoderLayer
  decoder = nn.TransformerDecoder     run with a causal mask (GPT style)
  encoder.norm / decoder.norm       norm, pre-LN only
  output (weight unless tied; bias if model.bias)

nn.TransformerEncoderLayer / DecoderLayer are used for pre- and post-LN with
biases. PyTorch 1.13's layers have neither DeepNorm's residual scale nor a
bias switch, so those variants are composed from nn.MultiheadAttention,
nn.Linear and nn.LayerNorm with the same parameter names.

Files are read and written with a small safetensors reader/writer (numpy),
since Debian has no python3-safetensors.
"""
import json
import math
import struct
import tomllib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- safetensors -----------------------------------------------------------

_DTYPES = {"F32": np.float32, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        arr = np.frombuffer(body[b:en], dtype=_DTYPES[e["dtype"]]).reshape(e["shape"])
        out[name] = arr.copy()
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[a.dtype]
        raw = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_config(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


# ---- model -----------------------------------------------------------------

def activation_fn(name):
    return {"relu": F.relu, "gelu": F.gelu,
            "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}[name]


def deepnorm_alphas(m):
    """Residual scales of DeepNorm (Wang et al. 2022), 1 otherwise."""
    if m["norm"] != "deepnorm":
        return 1.0, 1.0
    M = m["decoder_layers"]
    if m["kind"] == "decoder_only":
        return 1.0, (2 * M) ** 0.25
    N = m["encoder_layers"]
    return 0.81 * (N ** 4 * M) ** (1 / 16), (3 * M) ** 0.25


class ComposedEncoderLayer(nn.Module):
    """Self-attention + FFN block for DeepNorm or bias-free models."""

    def __init__(self, C, H, Fd, act, bias, eps, pre, alpha):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(C, H, dropout=0.0, bias=bias, batch_first=True)
        self.linear1 = nn.Linear(C, Fd, bias=bias)
        self.linear2 = nn.Linear(Fd, C, bias=bias)
        self.norm1 = nn.LayerNorm(C, eps=eps)
        self.norm2 = nn.LayerNorm(C, eps=eps)
        self.act, self.pre, self.alpha = act, pre, alpha

    def forward(self, x, src_mask=None, src_key_padding_mask=None, is_causal=False):
        def sa(h):
            return self.self_attn(h, h, h, attn_mask=src_mask, key_padding_mask=src_key_padding_mask,
                                  need_weights=False)[0]

        def ff(h):
            return self.linear2(self.act(self.linear1(h)))

        if self.pre:
            x = x + sa(self.norm1(x))
            return x + ff(self.norm2(x))
        x = self.norm1(self.alpha * x + sa(x))
        return self.norm2(self.alpha * x + ff(x))


class ComposedDecoderLayer(nn.Module):
    def __init__(self, C, H, Fd, act, bias, eps, pre, alpha):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(C, H, dropout=0.0, bias=bias, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(C, H, dropout=0.0, bias=bias, batch_first=True)
        self.linear1 = nn.Linear(C, Fd, bias=bias)
        self.linear2 = nn.Linear(Fd, C, bias=bias)
        self.norm1 = nn.LayerNorm(C, eps=eps)
        self.norm2 = nn.LayerNorm(C, eps=eps)
        self.norm3 = nn.LayerNorm(C, eps=eps)
        self.act, self.pre, self.alpha = act, pre, alpha

    def forward(self, x, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None):
        def sa(h):
            return self.self_attn(h, h, h, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask,
                                  need_weights=False)[0]

        def ca(h):
            return self.multihead_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask,
                                       need_weights=False)[0]

        def ff(h):
            return self.linear2(self.act(self.linear1(h)))

        if self.pre:
            x = x + sa(self.norm1(x))
            x = x + ca(self.norm2(x))
            return x + ff(self.norm3(x))
        x = self.norm1(self.alpha * x + sa(x))
        x = self.norm2(self.alpha * x + ca(x))
        return self.norm3(self.alpha * x + ff(x))


class OutputBias(nn.Module):
    """Holds `output.bias` when the output weight is tied to the embedding."""

    def __init__(self, V):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(V))


def sinusoidal(max_len, C):
    pe = np.zeros((max_len, C), dtype=np.float64)
    for i in range(0, C, 2):
        freq = math.exp(i * -(math.log(10000.0) / C))
        for p in range(max_len):
            pe[p, i] = math.sin(p * freq)
            if i + 1 < C:
                pe[p, i + 1] = math.cos(p * freq)
    return torch.from_numpy(pe.astype(np.float32))


class PstTransformer(nn.Module):
    def __init__(self, m, src_vocab, tgt_vocab):
        super().__init__()
        C, H, Fd = m["d_model"], m["heads"], m["ffn_dim"]
        eps, bias = m["layernorm_eps"], m["bias"]
        act = activation_fn(m["activation"])
        self.m = m
        self.enc_dec = m["kind"] == "encoder_decoder"
        pre = m["norm"] == "pre"
        standard = m["norm"] in ("pre", "post") and bias
        enc_alpha, dec_alpha = deepnorm_alphas(m)
        self.scale = math.sqrt(C) if m["scale_embeddings"] else 1.0
        learned = m["positions"] == "learned"

        def enc_layer(alpha):
            if standard:
                return nn.TransformerEncoderLayer(C, H, Fd, dropout=0.0, activation=act,
                                                  layer_norm_eps=eps, batch_first=True, norm_first=pre)
            return ComposedEncoderLayer(C, H, Fd, act, bias, eps, pre, alpha)

        if self.enc_dec:
            self.src_embed = nn.Embedding(src_vocab, C)
            self.tgt_embed = nn.Embedding(tgt_vocab, C)
            if learned:
                self.src_pos = nn.Embedding(m["max_len"], C)
                self.tgt_pos = nn.Embedding(m["max_len"], C)
            enc_layers = [enc_layer(enc_alpha) for _ in range(m["encoder_layers"])]
            self.encoder = nn.TransformerEncoder(enc_layers[0], m["encoder_layers"],
                                                 norm=nn.LayerNorm(C, eps=eps) if pre else None,
                                                 enable_nested_tensor=False)
            self.encoder.layers = nn.ModuleList(enc_layers)
            if standard:
                dec_layers = [nn.TransformerDecoderLayer(C, H, Fd, dropout=0.0, activation=act,
                                                         layer_norm_eps=eps, batch_first=True,
                                                         norm_first=pre)
                              for _ in range(m["decoder_layers"])]
            else:
                dec_layers = [ComposedDecoderLayer(C, H, Fd, act, bias, eps, pre, dec_alpha)
                              for _ in range(m["decoder_layers"])]
            self.decoder = nn.TransformerDecoder(dec_layers[0], m["decoder_layers"],
                                                 norm=nn.LayerNorm(C, eps=eps) if pre else None)
            self.decoder.layers = nn.ModuleList(dec_layers)
        else:
            self.embed = nn.Embedding(tgt_vocab, C)
            if learned:
                self.pos = nn.Embedding(m["max_len"], C)
            self.layers = nn.ModuleList([enc_layer(dec_alpha) for _ in range(m["decoder_layers"])])
            if pre:
                self.norm = nn.LayerNorm(C, eps=eps)
        if not m["tie_embeddings"]:
            self.output = nn.Linear(C, tgt_vocab, bias=bias)
        elif bias:
            self.output = OutputBias(tgt_vocab)
        self.register_buffer("pe", sinusoidal(m["max_len"], C), persistent=False)

    def embed_tokens(self, ids, table, pos):
        L = ids.shape[1]
        x = table(ids) * self.scale
        return x + (pos.weight[:L] if pos is not None else self.pe[:L])

    def output_weight(self):
        if not self.m["tie_embeddings"]:
            return self.output.weight
        return (self.tgt_embed if self.enc_dec else self.embed).weight

    def forward(self, batch):
        tgt_in = torch.from_numpy(batch["tgt_in"]).long()
        B, T = tgt_in.shape
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        tgt_pad = torch.arange(T)[None, :] >= torch.from_numpy(batch["tgt_len"]).long()[:, None]
        if self.enc_dec:
            src = torch.from_numpy(batch["src"]).long()
            S = src.shape[1]
            src_pad = torch.arange(S)[None, :] >= torch.from_numpy(batch["src_len"]).long()[:, None]
            x = self.embed_tokens(src, self.src_embed, getattr(self, "src_pos", None))
            mem = self.encoder(x, src_key_padding_mask=src_pad)
            y = self.embed_tokens(tgt_in, self.tgt_embed, getattr(self, "tgt_pos", None))
            h = self.decoder(y, mem, tgt_mask=causal, tgt_key_padding_mask=tgt_pad,
                             memory_key_padding_mask=src_pad)
        else:
            h = self.embed_tokens(tgt_in, self.embed, getattr(self, "pos", None))
            for layer in self.layers:
                h = layer(h, src_mask=causal, src_key_padding_mask=tgt_pad)
            if hasattr(self, "norm"):
                h = self.norm(h)
        bias = self.output.bias if hasattr(self, "output") else None
        return F.linear(h, self.output_weight(), bias)


def decays(name, decay_embeddings):
    """pst's weight-decay rule: weights of linear layers, and embeddings if asked."""
    if name.endswith(("in_proj_weight", "out_proj.weight", "linear1.weight", "linear2.weight",
                      "output.weight")):
        return True
    return decay_embeddings and name in ("src_embed.weight", "tgt_embed.weight", "embed.weight",
                                         "src_pos.weight", "tgt_pos.weight", "pos.weight")


def schedule_lr(job, t):
    """pst's schedule formulas (docs/design.md, Optimizer and schedules), written independently of the C++."""
    s, o = job["schedule"], job["optim"]
    base, w = o["lr"], s["warmup_steps"]
    total = s["total_steps"] or job["train"]["steps"]
    if s["kind"] == "inverse_sqrt":
        n = t + 1
        return base * job["model"]["d_model"] ** -0.5 * min(n ** -0.5, n * w ** -1.5)
    if t < w:
        return base * ((t + 1) / w)
    st, D, lo = t - w, max(1, total - w), s["min_lr"]
    k = s["kind"]
    if k == "constant":
        return base
    if k == "linear":
        return lo + (base - lo) * max(0.0, 1 - st / D)
    if k == "cosine":
        return lo + (base - lo) * (1 + math.cos(math.pi * min(st, D) / D)) / 2
    if k == "step":
        return base * s["gamma"] ** (st // s["step_size"])
    if k == "exponential":
        return base * math.exp(-s["decay_rate"] * st)
    raise ValueError(k)


def run_steps(job, weights, batch, steps):
    """Loss, logits and gradients of the first step, and the weights after
    `steps` steps of clip_grad_norm_ + AdamW/Adam on the same batch."""
    torch.set_default_dtype(torch.float32)
    m = job["model"]
    tgt_vocab = weights["tgt_embed.weight" if "tgt_embed.weight" in weights else "embed.weight"].shape[0]
    src_vocab = weights["src_embed.weight"].shape[0] if "src_embed.weight" in weights else 0
    model = PstTransformer(m, src_vocab, tgt_vocab)
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"name mapping broken: missing {missing}, unexpected {unexpected}")
    o = job["optim"]
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decays(n, o["decay_embeddings"])], "weight_decay": o["weight_decay"]},
        {"params": [p for n, p in named if not decays(n, o["decay_embeddings"])], "weight_decay": 0.0},
    ]
    cls = torch.optim.AdamW if o["algorithm"] == "adamw" else torch.optim.Adam
    opt = cls(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], foreach=False)
    targets = torch.from_numpy(batch["tgt_out"]).long()
    out = {}
    for k in range(steps):
        opt.zero_grad(set_to_none=True)
        logits = model(batch)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=-1, label_smoothing=job["train"]["label_smoothing"])
        loss.backward()
        if k == 0:
            out["loss"] = np.array([loss.item()], dtype=np.float32)
            out["logits"] = logits.detach().numpy()
            for n, p in named:
                out["grad/" + n] = p.grad.detach().numpy().copy()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                              o["clip_norm"] if o["clip_norm"] > 0 else float("inf"))
        out.setdefault("grad_norm", []).append(float(norm))
        lr = schedule_lr(job, k)
        out.setdefault("lr", []).append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
    for n, p in named:
        out["after/" + n] = p.detach().numpy().copy()
    out["lr"] = np.array(out["lr"], dtype=np.float32)
    out["grad_norm"] = np.array(out["grad_norm"], dtype=np.float32)
    return out
