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
nn.Linear and nn.LayerNorm with the same parameter names. Models with the
blocks of current LMs (RMSNorm, rotary positions, SwiGLU, grouped-query
attention) are composed from ModernLayer, whose attention is written out
with torch operations under the same names: in_proj_weight holds the query
rows (d_model), then the key rows and the value rows (kv_heads * head size
each); a SwiGLU linear1 holds the gate rows (ffn_dim), then the rows the
gate multiplies.

Files are read and written with a small safetensors reader/writer (numpy),
since Debian has no python3-safetensors.
"""
import base64
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

class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (PyTorch 1.13 has no nn.RMSNorm)."""

    def __init__(self, C, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(C))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(m, C):
    if m.get("norm_type", "layernorm") == "rmsnorm":
        return RMSNorm(C, m["layernorm_eps"])
    return nn.LayerNorm(C, eps=m["layernorm_eps"])


def rope_tables(max_len, D, theta):
    """cos and sin (max_len, D/2) of angle p * theta^(-2i/D), in float64 then rounded."""
    p = np.arange(max_len, dtype=np.float64)[:, None]
    i = np.arange(D // 2, dtype=np.float64)[None, :]
    angle = p * theta ** (-2.0 * i / D)
    return torch.from_numpy(np.cos(angle).astype(np.float32)), torch.from_numpy(np.sin(angle).astype(np.float32))


def rotate(x, cos, sin):
    """Rotary positions on x (B, heads, L, D): columns i and i + D/2 form a pair."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    """Multi-head attention with grouped key/value heads and optional rotary
    positions; parameters named as nn.MultiheadAttention's."""

    def __init__(self, C, H, kv_heads, bias):
        super().__init__()
        self.C, self.H, self.KVH, self.D = C, H, kv_heads, C // H
        rows = C + 2 * kv_heads * self.D
        self.in_proj_weight = nn.Parameter(torch.empty(rows, C))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(rows))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(C, C, bias=bias)

    def forward(self, x, mem=None, key_padding_mask=None, causal=False, rope=None):
        C, H, KVH, D = self.C, self.H, self.KVH, self.D
        W, b = self.in_proj_weight, self.in_proj_bias
        src = x if mem is None else mem
        B, L, Lk = x.shape[0], x.shape[1], src.shape[1]
        q = F.linear(x, W[:C], None if b is None else b[:C]).view(B, L, H, D).transpose(1, 2)
        kv = F.linear(src, W[C:], None if b is None else b[C:])
        k = kv[..., :KVH * D].reshape(B, Lk, KVH, D).transpose(1, 2)
        v = kv[..., KVH * D:].reshape(B, Lk, KVH, D).transpose(1, 2)
        if rope is not None:
            cos, sin = rope
            q, k = rotate(q, cos[:L], sin[:L]), rotate(k, cos[:Lk], sin[:Lk])
        k = k.repeat_interleave(H // KVH, dim=1)
        v = v.repeat_interleave(H // KVH, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        if causal:
            future = torch.triu(torch.ones(L, Lk, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(future, float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, L, C)
        return self.out_proj(out)


class ModernLayer(nn.Module):
    """An encoder, decoder or decoder-only layer of any of pst's blocks."""

    def __init__(self, m, cross, alpha):
        super().__init__()
        C, H, Fd, bias = m["d_model"], m["heads"], m["ffn_dim"], m["bias"]
        kvh = m.get("kv_heads", 0) or H
        self.gated = m["activation"] == "swiglu"
        self.self_attn = Attention(C, H, kvh, bias)
        if cross:
            self.multihead_attn = Attention(C, H, kvh, bias)
        self.linear1 = nn.Linear(C, 2 * Fd if self.gated else Fd, bias=bias)
        self.linear2 = nn.Linear(Fd, C, bias=bias)
        for i in range(3 if cross else 2):
            setattr(self, f"norm{i + 1}", make_norm(m, C))
        self.act = None if self.gated else activation_fn(m["activation"])
        self.Fd, self.cross, self.pre, self.alpha = Fd, cross, m["norm"] == "pre", alpha

    def forward(self, x, pad, causal, rope, mem=None, mem_pad=None):
        def ff(h):
            h = self.linear1(h)
            h = F.silu(h[..., :self.Fd]) * h[..., self.Fd:] if self.gated else self.act(h)
            return self.linear2(h)

        blocks = [lambda h: self.self_attn(h, key_padding_mask=pad, causal=causal, rope=rope)]
        if self.cross:
            blocks.append(lambda h: self.multihead_attn(h, mem=mem, key_padding_mask=mem_pad))
        blocks.append(ff)
        for i, f in enumerate(blocks):
            norm = getattr(self, f"norm{i + 1}")
            x = x + f(norm(x)) if self.pre else norm(self.alpha * x + f(x))
        return x


class Stack(nn.Module):
    """`layers` and, pre-LN, the final `norm`: the names of nn.TransformerEncoder's."""

    def __init__(self, layers, norm):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, x, **kw):
        for layer in self.layers:
            x = layer(x, **kw)
        return self.norm(x) if self.norm is not None else x


def is_modern(m):
    return (m.get("norm_type", "layernorm") == "rmsnorm" or m["positions"] == "rope"
            or m["activation"] == "swiglu" or (m.get("kv_heads", 0) or m["heads"]) != m["heads"])


def activation_fn(name):
    return {"relu": F.relu, "gelu": F.gelu,
            "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "swiglu": None}[name]


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
        self.modern = is_modern(m)
        self.rope = rope_tables(m["max_len"], C // H, m.get("rope_theta", 10000.0)) \
            if m["positions"] == "rope" else None
        if self.modern:
            self.build_modern(m, src_vocab, tgt_vocab, learned, pre, enc_alpha, dec_alpha)
            return

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

    def build_modern(self, m, src_vocab, tgt_vocab, learned, pre, enc_alpha, dec_alpha):
        C = m["d_model"]
        prefixes = [("src_", "encoder", enc_alpha, m["encoder_layers"], False, src_vocab),
                    ("tgt_", "decoder", dec_alpha, m["decoder_layers"], True, tgt_vocab)]
        if not self.enc_dec:
            prefixes = [("", None, dec_alpha, m["decoder_layers"], False, tgt_vocab)]
        for p, stack, alpha, n, cross, vocab in prefixes:
            setattr(self, p + "embed", nn.Embedding(vocab, C))
            if learned:
                setattr(self, p + "pos", nn.Embedding(m["max_len"], C))
            layers = [ModernLayer(m, cross, alpha) for _ in range(n)]
            if stack is None:
                self.layers = nn.ModuleList(layers)
                if pre:
                    self.norm = make_norm(m, C)
            else:
                setattr(self, stack, Stack(layers, make_norm(m, C) if pre else None))
        if not m["tie_embeddings"]:
            self.output = nn.Linear(C, tgt_vocab, bias=m["bias"])
        elif m["bias"]:
            self.output = OutputBias(tgt_vocab)
        self.register_buffer("pe", sinusoidal(m["max_len"], C), persistent=False)

    def embed_tokens(self, ids, table, pos):
        L = ids.shape[1]
        x = table(ids) * self.scale
        if self.rope is not None:
            return x
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
        if self.modern:
            h = self.embed_tokens(tgt_in, self.tgt_embed if self.enc_dec else self.embed,
                                  getattr(self, "tgt_pos" if self.enc_dec else "pos", None))
            if self.enc_dec:
                src = torch.from_numpy(batch["src"]).long()
                src_pad = torch.arange(src.shape[1])[None, :] >= torch.from_numpy(batch["src_len"]).long()[:, None]
                x = self.embed_tokens(src, self.src_embed, getattr(self, "src_pos", None))
                mem = self.encoder(x, pad=src_pad, causal=False, rope=self.rope)
                h = self.decoder(h, pad=tgt_pad, causal=True, rope=self.rope, mem=mem, mem_pad=src_pad)
            else:
                for layer in self.layers:
                    h = layer(h, pad=tgt_pad, causal=True, rope=self.rope)
                if getattr(self, "norm", None) is not None:
                    h = self.norm(h)
        elif self.enc_dec:
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


# ---- loading a trained model -------------------------------------------------

def read_metadata(path):
    """The __metadata__ of a safetensors file (pst keeps the job config and
    the vocabularies there)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return header.get("__metadata__", {})


def load(path):
    """A pst model file (model.safetensors or best.safetensors) as a PyTorch
    module in eval mode; its job config is model.job, and a G2P model's
    vocabularies are model.letters and model.phones (ids are list indices).

        import pst_torch
        model = pst_torch.load("runs/g2p-small/model.safetensors")
        print(pst_torch.g2p_greedy(model, "hello"))
    """
    meta = read_metadata(path)
    if "config" not in meta:
        raise ValueError(f"{path}: no 'config' metadata; not a pst model file")
    job = tomllib.loads(meta["config"])
    weights = read_safetensors(path)
    m = job["model"]
    enc_dec = m["kind"] == "encoder_decoder"
    tgt_vocab = weights["tgt_embed.weight" if enc_dec else "embed.weight"].shape[0]
    src_vocab = weights["src_embed.weight"].shape[0] if enc_dec else 0
    model = PstTransformer(m, src_vocab, tgt_vocab)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: names do not match the model: missing {missing}, unexpected {unexpected}")
    model.eval()
    model.job = job
    model.letters = json.loads(meta["letters"]) if "letters" in meta else None
    model.phones = json.loads(meta["phones"]) if "phones" in meta else None
    # A SentencePiece LM's tokenizer (.model bytes), for the sentencepiece package.
    model.sentencepiece = base64.b64decode(meta["sentencepiece"]) if "sentencepiece" in meta else None
    return model


def _run(model, src, tgt):
    batch = {"tgt_in": np.array([tgt], np.int32), "tgt_len": np.array([len(tgt)], np.int32)}
    if src is not None:
        batch["src"] = np.array([src], np.int32)
        batch["src_len"] = np.array([len(src)], np.int32)
    with torch.no_grad():
        return model(batch)[0, -1]


def g2p_greedy(model, word):
    """The phones of `word` by greedy decoding, as `pst predict` gives them:
    letters lowercased (ASCII), unknown ones as <unk>, at most 2 x letters + 5
    phones, never <pad>, <s> or <unk>."""
    index = {t: i for i, t in enumerate(model.letters)}
    src = [index.get(c.lower() if c.isascii() else c, 3) for c in word] + [2]
    out = [1]
    limit = min(2 * len(word) + 5, model.job["model"]["max_len"] - 1)
    for _ in range(limit):
        logits = _run(model, src, out)
        logits[[0, 1, 3]] = float("-inf")
        nxt = int(logits.argmax())
        if nxt == 2:
            break
        out.append(nxt)
    return [model.phones[i] for i in out[1:]]


def lm_greedy(model, prompt, n):
    """`n` more bytes after `prompt` by greedy decoding (a byte-level LM)."""
    if model.sentencepiece is not None:
        raise ValueError("a SentencePiece model: its ids are pieces of model.sentencepiece, not bytes")
    ids = list(prompt.encode())
    max_len = model.job["model"]["max_len"]
    for _ in range(n):
        ids.append(int(_run(model, None, ids[-max_len:]).argmax()))
    return bytes(ids[len(prompt.encode()):]).decode(errors="replace")


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 3:
        raise SystemExit("usage: pst_torch.py MODEL.safetensors WORD... (G2P) | PROMPT (LM)")
    mdl = load(sys.argv[1])
    for arg in sys.argv[2:]:
        if mdl.letters is not None:
            print(arg, " ".join(g2p_greedy(mdl, arg)))
        else:
            print(repr(arg + lm_greedy(mdl, arg, 40)))
