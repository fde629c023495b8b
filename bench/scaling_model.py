#!/usr/bin/env python3
"""The step-time model of docs/scaling.md against bench/scaling.sh's runs.

Reads RUNS/LINK/SxW/ (the workers' and servers' logs of pst, and of the plain
TCP baseline), prints for each point the measured step time of pst and of
the baseline, what the model predicts and the error, then what the model
predicts for clusters, and draws the points and the model into a PNG.

The model (a BSP step: compute, push, update, pull, one after the other):

  T = C + D + U + D

  C        the worker's compute (the sleep)
  D        one direction of the exchange (the push, then the pull): every
           worker moves M bytes, every server W*M/S; the slowest resource
           decides:
             max(M / B, W*M / (S*B), W*M / H)
           B the link's rate as TCP payload (1448 of every 1514 bytes on the
           wire), H what the host that carries the whole job moves in all
           (this machine; for a cluster each host is its own and H drops out)
  U        a server's update: adding W gradients of M/S bytes and AdamW over
           its P/S parameters, u_add*W*P + u_adam*P over the CPUs the servers
           have (here all share one machine's, so S cancels). With
           cluster.overlap on, the pull would stream the weights as the
           update writes them and hide U; the benchmark's workers push whole
           gradients, as CPU workers do (overlap auto is off for them)

Calibrated, never from pst's step times: u_add and u_adam from the update
times the servers log at loopback 1x1 and 1x8 (or the first and last
loopback point with one server); H from the baseline's own step time at a
--calibrate point per link kind (shaped, loopback): what plain TCP moves
through this machine with every host busy. One stream on loopback is
limited too: R1 from the baseline's loopback 1x1.
"""
import argparse
import math
import os
import re
import statistics
import sys

PAYLOAD = 1448 / 1514  # TCP payload of a 1500-byte IP packet (timestamps on) in an Ethernet frame


def link_bits(link):
    m = re.fullmatch(r"(\d+)(k|m|g)bit", link)
    if not m:
        return None
    return int(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def steps_of(files, warmup, pattern):
    """step -> the slowest worker's (seconds, ...) over `files`."""
    steps = {}
    for f in files:
        for line in open(f):
            m = re.match(pattern, line)
            if m:
                k = int(m.group(1))
                row = tuple(float(x) for x in m.groups()[1:])
                if k not in steps or row[0] > steps[k][0]:
                    steps[k] = row
    kept = [steps[k] for k in sorted(steps) if k > warmup]
    if not kept:
        sys.exit(f"no steps after the first {warmup} in {files}")
    return kept


def read_point(path, warmup):
    names = os.listdir(path)
    pick = lambda prefix: sorted(os.path.join(path, n) for n in names if n.startswith(prefix))
    pst = steps_of(pick("worker"), warmup, r"step (\d+) seconds ([\d.]+) push ([\d.]+) pull ([\d.]+)")
    raw = steps_of(pick("raw-worker"), warmup, r"step (\d+) seconds ([\d.]+)")
    point = {
        "step": statistics.median(r[0] for r in pst),
        "push": statistics.median(r[1] for r in pst),
        "pull": statistics.median(r[2] for r in pst),
        "raw": statistics.median(r[0] for r in raw),
        "update": 0.0,
        "drops": None,
    }
    for f in pick("worker0"):
        for line in open(f):
            m = re.match(r"parameters (\d+) bytes (\d+)", line)
            if m:
                point["params"], point["bytes"] = int(m.group(1)), int(m.group(2))
    for f in pick("server"):
        for line in open(f):
            m = re.search(r"steps \(([\d.]+) ms of update", line)
            if m:
                point["update"] = max(point["update"], float(m.group(1)) / 1e3)
    if os.path.exists(os.path.join(path, "drops")):
        point["drops"] = int(open(os.path.join(path, "drops")).read())
    return point


class Model:
    def __init__(self, compute, params, bytes_, cpus=None):
        self.C, self.P, self.M = compute, params, bytes_
        self.u_add = self.u_adam = 0.0  # CPU-seconds per parameter (per pushed gradient, per update)
        self.H = {}  # link kind -> bytes/s the host carries in all
        self.R1 = math.inf  # one loopback stream, bytes/s
        self.cpus = cpus

    def update(self, S, W):
        """Every server on this machine: they share its CPUs, so S cancels."""
        return (self.u_add * W + self.u_adam) * self.P / self.cpus

    def direction(self, S, W, bits=None, host=None, per_stream=math.inf):
        B = bits / 8 * PAYLOAD if bits else math.inf
        t = max(self.M / B, W * self.M / (S * B), self.M / per_stream)
        if host:
            t = max(t, W * self.M / host)
        return t

    def step(self, S, W, link):
        bits = link_bits(link)
        kind = "loopback" if bits is None else "shaped"
        d = self.direction(S, W, bits, self.H.get(kind), self.R1 if bits is None else math.inf)
        return self.C + 2 * d + self.update(S, W)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--compute-ms", type=float, required=True)
    ap.add_argument("--tokens", type=float, required=True)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--calibrate", default="1gbit:4x8 loopback:4x8",
                    help="LINK:SxW points whose baseline (plain TCP) gives H, one per link kind")
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--png", default="")
    a = ap.parse_args()

    points = {}
    for link in os.listdir(a.runs):
        for sw in os.listdir(os.path.join(a.runs, link)):
            s, w = map(int, sw.split("x"))
            points[(link, s, w)] = read_point(os.path.join(a.runs, link, sw), a.warmup)
    if not points:
        sys.exit(f"no runs in {a.runs}")
    any_point = next(iter(points.values()))
    model = Model(a.compute_ms / 1e3, any_point["params"], any_point["bytes"], a.cpus)

    # The update's cost: two loopback points of one server (its log).
    notes = []
    ones = sorted((w, p) for (link, s, w), p in points.items() if link == "loopback" and s == 1)
    if len(ones) >= 2 and ones[0][0] != ones[-1][0]:
        (w0, p0), (w1, p1) = ones[0], ones[-1]
        per_push = (p1["update"] - p0["update"]) / (w1 - w0)
        model.u_add = max(0.0, per_push) * a.cpus / model.P
        model.u_adam = max(0.0, p0["update"] - per_push * w0) * a.cpus / model.P
    elif ones:
        model.u_adam = ones[0][1]["update"] * a.cpus / model.P
        notes.append("one loopback point with one server: the update's cost does not grow with W here")
    else:
        notes.append("no loopback point with one server: the update is left out")
    # The host's capacity, from the baseline (plain TCP) of one point per kind.
    C, M = model.C, model.M
    for item in a.calibrate.split():
        link, sw = item.split(":")
        s, w = map(int, sw.split("x"))
        if (link, s, w) not in points:
            notes.append(f"no point {link} {sw} for --calibrate: the host's capacity is left out for that kind")
            continue
        kind = "loopback" if link_bits(link) is None else "shaped"
        model.H[kind] = w * M / ((points[(link, s, w)]["raw"] - C) / 2)
    if ("loopback", 1, 1) in points:
        model.R1 = M / ((points[("loopback", 1, 1)]["raw"] - C) / 2)

    print(f"model: C {C * 1e3:.2f} ms, M {M / 1e6:.2f} MB ({model.P} parameters, {M / model.P:.0f} bytes each on the wire), {a.cpus} CPUs; "
          f"update {model.u_add * 1e9:.2f} ns a parameter per gradient added + {model.u_adam * 1e9:.2f} ns a "
          f"parameter of AdamW (CPU time); host capacity "
          + (", ".join(f"{k} {v / 1e6:.0f} MB/s" for k, v in sorted(model.H.items())) or "not calibrated")
          + (f", one loopback stream {model.R1 / 1e6:.0f} MB/s" if model.R1 < math.inf else ""))
    for note in notes:
        print(f"model: {note}")
    print(f"{'link':9s} {'SxW':5s} {'pst ms':>8s} {'tokens/s':>9s} {'push':>7s} {'pull':>7s} {'update':>7s} "
          f"{'TCP ms':>8s} {'pst/TCP':>7s} {'model ms':>9s} {'error':>7s} {'drops':>7s}")
    order = lambda key: (link_bits(key[0]) or math.inf, key[1], key[2])
    errors = []
    for key in sorted(points, key=order):
        link, s, w = key
        p = points[key]
        pred = model.step(s, w, link)
        err = (p["step"] - pred) / pred
        errors.append((abs(err), key))
        p["model"] = pred
        print(f"{link:9s} {s}x{w:<3d} {p['step'] * 1e3:8.1f} {w * a.tokens / p['step']:9.0f} {p['push'] * 1e3:7.1f} "
              f"{p['pull'] * 1e3:7.1f} {p['update'] * 1e3:7.1f} {p['raw'] * 1e3:8.1f} {p['step'] / p['raw']:7.2f} "
              f"{pred * 1e3:9.1f} {err * 100:+6.1f}% {'' if p['drops'] is None else p['drops']:>7}")
    within = sum(1 for e, _ in errors if e <= 0.2)
    print(f"within 20% of the model: {within} of {len(errors)} points; the worst "
          + ", ".join(f"{k[0]} {k[1]}x{k[2]} {e * 100:.0f}%" for e, k in sorted(errors, reverse=True)[:3]))

    # Clusters: every host its own (no H), each server host with the CPUs
    # of this machine, a GPU worker's step. Variants: gradients and weights
    # as bf16 on the wire (half of M), and a server that adds each push as it
    # arrives (the sum leaves the update: u_add hidden behind the links).
    print("predicted for clusters (each process a host of its own; servers with "
          f"{a.cpus} CPUs each at this machine's update rate):")
    print(f"{'workers':>7s} {'servers':>7s} {'link':>8s} {'variant':<16s} {'step ms':>8s} {'tokens/s':>10s} "
          f"{'speed-up':>9s} {'ring all-reduce ms':>18s}")
    rows = [(8, 4, 25, "fp32"), (64, 16, 25, "fp32"), (64, 16, 25, "bf16 wire"), (64, 16, 25, "sum on arrival"),
            (64, 16, 25, "both"), (64, 64, 25, "fp32"), (64, 16, 100, "fp32"), (256, 64, 25, "fp32")]
    for W, S, gbit, variant in rows:
        bits = gbit * 1e9
        # M is what the measured runs moved (4 or 2 bytes a parameter, as
        # their cluster.wire); the rows name the format they predict.
        scale = (2 if variant in ("bf16 wire", "both") else 4) * model.P / model.M
        d = scale * model.direction(S, W, bits)
        add = 0.0 if variant in ("sum on arrival", "both") else model.u_add
        u = (add * W + model.u_adam) * model.P / (S * a.cpus)
        t = model.C + 2 * d + u
        ring = model.C + 2 * (W - 1) / W * scale * M / (bits / 8 * PAYLOAD)
        print(f"{W:7d} {S:7d} {gbit:5d}G/s {variant:<16s} {t * 1e3:8.1f} {W * a.tokens / t:10.0f} "
              f"{W * model.C / t:9.1f} {ring * 1e3:18.1f}")

    if a.png:
        draw(points, model, a, a.png)


def draw(points, model, a, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no PNG: python3-matplotlib is missing (scripts/setup installs it)")
        return
    links = sorted({k[0] for k in points}, key=lambda l: link_bits(l) or math.inf)
    fig, axes = plt.subplots(1, len(links), figsize=(5 * len(links), 4.2), squeeze=False)
    colors = {1: "tab:blue", 2: "tab:orange", 4: "tab:green", 8: "tab:red"}
    for ax, link in zip(axes[0], links):
        servers = sorted({k[1] for k in points if k[0] == link})
        for s in servers:
            ws = sorted(k[2] for k in points if k[0] == link and k[1] == s)
            c = colors.get(s, None)
            ax.plot(ws, [points[(link, s, w)]["step"] * 1e3 for w in ws], "o", color=c, label=f"S={s} pst")
            ax.plot(ws, [points[(link, s, w)]["raw"] * 1e3 for w in ws], "x", color=c, label=f"S={s} plain TCP")
            dense = [w for w in range(min(ws), max(ws) + 1)]
            ax.plot(dense, [model.step(s, w, link) * 1e3 for w in dense], "-", color=c, label=f"S={s} model")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("workers W")
        ax.set_ylabel("step time, ms")
        ax.set_title(link if link == "loopback" else f"{link} links")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"pst BSP step, {model.M / 1e6:.1f} MB of gradient a worker, compute {model.C * 1e3:.2f} ms "
                 "(points: measured; lines: model)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"plot: {png}")


if __name__ == "__main__":
    main()
