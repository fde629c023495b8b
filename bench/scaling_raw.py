#!/usr/bin/env python3
"""The baseline of bench/scaling.sh: the same bytes over plain TCP, no pst.

S servers and W workers in the BSP pattern of a pst step: each worker sleeps
--compute-ms, then sends --bytes / S to every server at once; a server that
has all W parts sends --bytes / S back to every worker at once; the worker's
step ends when it has every part. What the network and the kernel allow, with
no serialisation, no optimizer and no copies but the sockets' own.

  scaling_raw.py server --listen ADDR:PORT --workers W --bytes B --steps N
  scaling_raw.py worker --servers ADDR:PORT,... --bytes B --steps N --compute-ms MS

A worker prints "step N seconds T" for each step.
"""
import argparse
import socket
import sys
import threading
import time


def send_all(conn, view):
    conn.sendall(view)


def receive_exactly(conn, buffer):
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = conn.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("the peer closed the connection mid-step")
        got += n


def each(function, conns, buffers):
    """function(conn, buffer) on every connection at once."""
    threads = [threading.Thread(target=function, args=(c, b)) for c, b in zip(conns, buffers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def tuned(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def server(a):
    host, port = a.listen.rsplit(":", 1)
    listener = socket.create_server((host, int(port)), backlog=a.workers)
    conns = []
    while len(conns) < a.workers:
        conns.append(tuned(listener.accept()[0]))
    part = a.bytes // a.servers
    inbox = [bytearray(part) for _ in conns]
    outbox = [memoryview(bytearray(part)) for _ in conns]
    for _ in range(a.steps):
        each(receive_exactly, conns, inbox)
        each(send_all, conns, outbox)
    for c in conns:
        c.close()


def worker(a):
    addresses = a.servers_list.split(",")
    conns = []
    deadline = time.monotonic() + 60
    for address in addresses:
        host, port = address.rsplit(":", 1)
        while True:
            try:
                conns.append(tuned(socket.create_connection((host, int(port)))))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    part = a.bytes // len(addresses)
    outbox = [memoryview(bytearray(part)) for _ in conns]
    inbox = [bytearray(part) for _ in conns]
    for step in range(a.steps):
        started = time.perf_counter()
        time.sleep(a.compute_ms / 1e3)
        each(send_all, conns, outbox)
        each(receive_exactly, conns, inbox)
        print(f"step {step + 1} seconds {time.perf_counter() - started:.6f}", flush=True)
    for c in conns:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=["server", "worker"])
    ap.add_argument("--listen")
    ap.add_argument("--servers", dest="servers_list")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--server-count", dest="servers", type=int, default=1)
    ap.add_argument("--bytes", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--compute-ms", type=float, default=0.0)
    a = ap.parse_args()
    if a.role == "server":
        if not a.listen:
            sys.exit("scaling_raw.py server needs --listen ADDR:PORT")
        server(a)
    else:
        if not a.servers_list:
            sys.exit("scaling_raw.py worker needs --servers ADDR:PORT,...")
        worker(a)


if __name__ == "__main__":
    main()
