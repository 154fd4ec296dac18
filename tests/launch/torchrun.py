#!/usr/bin/env python3
"""torchrun.py — a stand-in for `torchrun --standalone --nproc-per-node N
--no-python CMD ARGS...` for the tests, where torch is not installed.
Standard library only.

Like torchrun's elastic agent it serves a TCPStore (PyTorch's c10d wire
protocol, as its libuv server speaks it) on MASTER_ADDR:MASTER_PORT, starts
N workers with the variables torchrun gives them (RANK, LOCAL_RANK,
WORLD_SIZE, ..., TORCHELASTIC_USE_AGENT_STORE=True), passes their output
through, and when one exits non-zero stops the others (SIGTERM, then
SIGKILL after a few seconds) and exits with that worker's code.

With TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 (as in torchrun 2.4+) the workers
get TORCHELASTIC_USE_AGENT_STORE=False and a free MASTER_PORT nobody serves:
rank 0 must serve the store itself.

Options: --standalone, --nnodes 1, --nproc-per-node/--nproc_per_node N,
--no-python, --master-addr, --master-port, --rdzv-id, --max-restarts 0.
"""
import argparse
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

# c10d::detail::QueryType, in order
(VALIDATE, SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, DELETE_KEY, APPEND, MULTI_GET, MULTI_SET,
 CANCEL_WAIT, PING, QUEUE_PUSH, QUEUE_POP, QUEUE_LEN, LIST_KEYS, BARRIER) = range(19)
READY, NOT_READY = 0, 1           # CheckResponseType
STOP_WAITING, WAIT_CANCELED = 0, 1  # WaitResponseType
MAGIC = 0x3C85F7CE
MAX_KEY, MAX_VALUE, MAX_KEYS = 8192, 8 << 20, 128 * 1024  # the libuv server's limits


class Incomplete(Exception):
    """The query has not arrived completely yet."""


class ProtocolError(Exception):
    """The client broke the protocol: drop it."""


class Reader:
    def __init__(self, buf):
        self.buf, self.off = buf, 0

    def take(self, n):
        if len(self.buf) - self.off < n:
            raise Incomplete()
        b = bytes(self.buf[self.off:self.off + n])
        self.off += n
        return b

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def i64(self):
        return struct.unpack("<q", self.take(8))[0]

    def blob(self, limit):
        n = self.u64()
        if n > limit:
            raise ProtocolError(f"a string of {n} bytes")
        return self.take(n)


def blob(b):
    return struct.pack("<Q", len(b)) + b


def parse_int(b):
    """std::stoll: leading spaces, a sign, digits; the rest is ignored."""
    s = b.decode("latin-1").lstrip(" \t\n")
    i = 1 if s[:1] in "+-" and s[:1] else 0
    j = i
    while j < len(s) and s[j].isdigit():
        j += 1
    if j == i:
        raise ProtocolError(f"ADD to a value that is not a number: {b[:40]!r}")
    return int(s[:j])


class Conn:
    def __init__(self, sock):
        self.sock, self.inbuf, self.outbuf = sock, bytearray(), bytearray()
        self.validated, self.waiting, self.dead = False, set(), False


class StoreServer:
    """PyTorch's TCPStore server: one thread, selectors, many clients."""

    def __init__(self, port):
        if socket.has_dualstack_ipv6():
            self.lsock = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=1024)
        else:
            self.lsock = socket.create_server(("", port), backlog=1024)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.kv, self.queues, self.conns = {}, {}, []
        self.wake_r, self.wake_w = socket.socketpair()
        self.thread = threading.Thread(target=self.run, name="tcpstore", daemon=True)
        self.thread.start()

    def stop(self):
        self.wake_w.send(b"x")
        self.thread.join(5)

    def exists(self, k):
        return k in self.kv or bool(self.queues.get(k))

    def wake(self, key, only_one=False):
        for c in self.conns:
            if not c.dead and key in c.waiting:
                c.waiting.discard(key)
                if not c.waiting:
                    c.outbuf.append(STOP_WAITING)
                    if only_one:
                        return

    def query(self, c):
        """Answers one query from c.inbuf; raises Incomplete if it has not all arrived."""
        r = Reader(c.inbuf)
        q = r.take(1)[0]
        if not c.validated and q != VALIDATE:
            raise ProtocolError("the first query is not VALIDATE")
        out = c.outbuf
        if q == VALIDATE:
            if r.u32() != MAGIC:
                raise ProtocolError("wrong VALIDATE magic")
            c.validated = True
        elif q == PING:
            out += r.take(4)
        elif q in (SET, APPEND, QUEUE_PUSH):
            k, v = r.blob(MAX_KEY), r.blob(MAX_VALUE)
            if q == QUEUE_PUSH:
                self.queues.setdefault(k, []).append(v)
                self.wake(k, only_one=True)
            else:
                self.kv[k] = self.kv.get(k, b"") + v if q == APPEND else v
                self.wake(k)
        elif q == COMPARE_SET:
            k, expected, desired = r.blob(MAX_KEY), r.blob(MAX_VALUE), r.blob(MAX_VALUE)
            if k not in self.kv:
                if expected:
                    out += blob(expected)
                else:
                    self.kv[k] = desired
                    out += blob(desired)
                    self.wake(k)
            else:
                if self.kv[k] == expected:
                    self.kv[k] = desired
                out += blob(self.kv[k])
                self.wake(k)
        elif q == GET:
            out += blob(self.kv.get(r.blob(MAX_KEY), b""))
        elif q == DELETE_KEY:
            out += struct.pack("<q", 1 if self.kv.pop(r.blob(MAX_KEY), None) is not None else 0)
        elif q in (QUEUE_POP, QUEUE_LEN):
            items = self.queues.get(r.blob(MAX_KEY), [])
            out += struct.pack("<q", len(items))
            if q == QUEUE_POP and items:
                out += blob(items.pop(0))
        elif q == ADD:
            k, delta = r.blob(MAX_KEY), r.i64()
            v = parse_int(self.kv[k]) + delta if k in self.kv else delta
            v = (v + 2**63) % 2**64 - 2**63
            self.kv[k] = str(v).encode()
            out += struct.pack("<q", v)
            self.wake(k)
        elif q in (CHECK, WAIT, MULTI_GET, MULTI_SET):
            n = r.u64()
            if n > MAX_KEYS:
                raise ProtocolError(f"{n} keys in one query")
            items = [(r.blob(MAX_KEY), r.blob(MAX_VALUE) if q == MULTI_SET else None) for _ in range(n)]
            if q == MULTI_SET:
                for k, v in items:
                    self.kv[k] = v
                    self.wake(k)
            elif q == MULTI_GET:
                for k, _ in items:
                    out += blob(self.kv.get(k, b""))
            else:
                missing = {k for k, _ in items if not self.exists(k)}
                if q == CHECK:
                    out.append(NOT_READY if missing else READY)
                elif missing:
                    c.waiting = missing
                else:
                    out.append(STOP_WAITING)
        elif q == GETNUMKEYS:
            out += struct.pack("<q", len(self.kv))
        elif q == LIST_KEYS:
            out += struct.pack("<q", len(self.kv)) + b"".join(blob(k) for k in self.kv)
        elif q == CANCEL_WAIT:
            c.waiting = set()
            out.append(WAIT_CANCELED)
        elif q == BARRIER:
            k, world = r.blob(MAX_KEY), r.i64()
            count = parse_int(self.kv[k]) + 1 if k in self.kv else 1
            self.kv[k] = str(count).encode()
            if count >= world:
                out.append(STOP_WAITING)
                self.wake(k)
            else:
                c.waiting = {k}
        else:
            raise ProtocolError(f"unknown query {q}")
        del c.inbuf[:r.off]

    def serve(self, c):
        try:
            while True:
                data = c.sock.recv(1 << 20)
                if not data:
                    c.dead = True
                    break
                c.inbuf += data
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            c.dead = True
        try:
            while c.inbuf:
                self.query(c)
        except Incomplete:
            pass
        except ProtocolError:
            c.dead = True

    def flush(self, c):
        try:
            while c.outbuf:
                n = c.sock.send(c.outbuf)
                del c.outbuf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            c.dead = True

    def run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ, "listen")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, events in sel.select():
                if key.data == "wake":
                    for c in self.conns:
                        c.sock.close()
                    self.lsock.close()
                    return
                if key.data == "listen":
                    while True:
                        try:
                            s, _ = self.lsock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:
                            break
                        s.setblocking(False)
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        c = Conn(s)
                        self.conns.append(c)
                        sel.register(s, selectors.EVENT_READ, c)
                    continue
                c = key.data
                if events & selectors.EVENT_WRITE:
                    self.flush(c)
                if events & selectors.EVENT_READ:
                    self.serve(c)
            for c in list(self.conns):
                self.flush(c)
                if c.dead:
                    sel.unregister(c.sock)
                    c.sock.close()
                    self.conns.remove(c)
                else:
                    ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
                    sel.modify(c.sock, ev, c)


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(prog="torchrun.py", allow_abbrev=False,
                                 description="torchrun --standalone for the tests (serves the TCPStore itself)")
    ap.add_argument("--standalone", action="store_true")
    ap.add_argument("--nnodes", default="1")
    ap.add_argument("--nproc-per-node", "--nproc_per_node", dest="nproc", type=int, default=1)
    ap.add_argument("--no-python", "--no_python", dest="no_python", action="store_true")
    ap.add_argument("--master-addr", "--master_addr", dest="master_addr", default=None)
    ap.add_argument("--master-port", "--master_port", dest="master_port", type=int, default=None)
    ap.add_argument("--rdzv-id", "--rdzv_id", dest="rdzv_id", default=None)
    ap.add_argument("--max-restarts", "--max_restarts", dest="max_restarts", type=int, default=0)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    if a.nnodes not in ("1", "1:1"):
        ap.error("only --nnodes 1 is supported")
    if a.max_restarts != 0:
        ap.error("only --max-restarts 0 is supported")
    if a.nproc < 1:
        ap.error("--nproc-per-node must be at least 1")
    if not a.cmd:
        ap.error("no program to run")
    cmd = a.cmd if a.no_python else [sys.executable, "-u"] + a.cmd

    addr = a.master_addr or os.environ.get("MASTER_ADDR") or "127.0.0.1"
    agent_store = os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "0") != "1"
    server = None
    if agent_store:
        try:
            server = StoreServer(a.master_port or 0)
        except OSError as e:
            sys.exit(f"torchrun.py: cannot serve the TCPStore on port {a.master_port or 0}: {e.strerror}")
        port = server.port
    else:
        port = a.master_port or free_port()
    run_id = a.rdzv_id or (str(uuid.uuid4()) if a.standalone else "none")

    n = a.nproc
    procs = []
    for r in range(n):
        env = dict(os.environ)
        env.update(RANK=str(r), LOCAL_RANK=str(r), GROUP_RANK="0", ROLE_RANK=str(r), ROLE_NAME="default",
                   WORLD_SIZE=str(n), LOCAL_WORLD_SIZE=str(n), GROUP_WORLD_SIZE="1", ROLE_WORLD_SIZE=str(n),
                   MASTER_ADDR=addr, MASTER_PORT=str(port), TORCHELASTIC_RUN_ID=run_id,
                   TORCHELASTIC_RESTART_COUNT="0", TORCHELASTIC_MAX_RESTARTS="0",
                   TORCHELASTIC_USE_AGENT_STORE=str(agent_store))
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            procs.append(subprocess.Popen(cmd, env=env))
        except OSError as e:
            for p in procs:
                p.kill()
            sys.exit(f"torchrun.py: cannot start {cmd[0]}: {e.strerror}")

    stop_signal = []

    def on_signal(signum, frame):
        stop_signal.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def stop_all():
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 5
        while time.monotonic() < end and any(p.poll() is None for p in procs):
            time.sleep(0.05)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    code = 0
    while True:
        if stop_signal:
            print(f"torchrun.py: got signal {stop_signal[0]}, stopping the workers", file=sys.stderr, flush=True)
            stop_all()
            code = 128 + stop_signal[0]
            break
        failed = [(r, p) for r, p in enumerate(procs) if p.poll() not in (None, 0)]
        if failed:
            r, p = failed[0]
            rc = p.returncode
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            print(f"torchrun.py: rank {r} (local_rank {r}, pid {p.pid}) {how}; stopping the other workers",
                  file=sys.stderr, flush=True)
            stop_all()
            code = 128 - rc if rc < 0 else rc
            break
        if all(p.poll() == 0 for p in procs):
            break
        time.sleep(0.02)
    if server:
        server.stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
