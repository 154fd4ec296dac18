#!/usr/bin/env python3
"""store_client.py — a TCPStore client written from PyTorch's wire protocol
(standard library only), to check a server: our C one (test_store starts it
and passes --port and --c-keys) or the one in tests/launch/torchrun.py
(--env: MASTER_ADDR / MASTER_PORT). It speaks to the server the way
torch.distributed.TCPStore does (VALIDATE, PING, WAIT before GET, CANCEL_WAIT
on a timeout) and checks every answer; it prints one line per failure and
exits 1 if any, else prints "store_client: N checks passed".

With --c-keys it also reads the keys test_store set before starting it, and
leaves keys under py/ for test_store to read back afterwards.
"""
import argparse
import os
import socket
import struct
import sys
import time

(VALIDATE, SET, COMPARE_SET, GET, ADD, CHECK, WAIT, GETNUMKEYS, DELETE_KEY, APPEND, MULTI_GET, MULTI_SET,
 CANCEL_WAIT, PING, QUEUE_PUSH, QUEUE_POP, QUEUE_LEN, LIST_KEYS, BARRIER) = range(19)
MAGIC = 0x3C85F7CE

passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL store_client: {what}", flush=True)


def blob(b):
    return struct.pack("<Q", len(b)) + b


class Client:
    def __init__(self, host, port, validate=True, ping=True, timeout=10.0):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if validate:
            self.send(bytes([VALIDATE]) + struct.pack("<I", MAGIC))
        if ping:
            nonce = os.getpid() & 0xFFFFFFFF
            self.send(bytes([PING]) + struct.pack("<I", nonce))
            check(self.u32() == nonce, "PING echoes the nonce")

    def send(self, b):
        self.s.sendall(b)

    def recv(self, n):
        b = bytearray()
        while len(b) < n:
            chunk = self.s.recv(n - len(b))
            if not chunk:
                raise EOFError("the server closed the connection")
            b += chunk
        return bytes(b)

    def u8(self):
        return self.recv(1)[0]

    def u32(self):
        return struct.unpack("<I", self.recv(4))[0]

    def i64(self):
        return struct.unpack("<q", self.recv(8))[0]

    def value(self):
        return self.recv(struct.unpack("<Q", self.recv(8))[0])

    def set(self, k, v):
        self.send(bytes([SET]) + blob(k) + blob(v))

    def wait(self, keys, timeout):
        """True when the keys exist, False after timeout (cancelled as torch does)."""
        self.send(bytes([WAIT]) + struct.pack("<Q", len(keys)) + b"".join(blob(k) for k in keys))
        self.s.settimeout(timeout)
        try:
            r = self.u8()
            check(r == 0, "WAIT answers STOP_WAITING")
            return True
        except socket.timeout:
            pass
        finally:
            self.s.settimeout(10.0)
        self.send(bytes([CANCEL_WAIT]))
        r = self.u8()
        if r == 0:  # STOP_WAITING crossed the cancel
            r = self.u8()
        check(r == 1, "CANCEL_WAIT answers WAIT_CANCELED")
        return False

    def get(self, k, timeout=10.0):
        if not self.wait([k], timeout):
            return None
        self.send(bytes([GET]) + blob(k))
        return self.value()

    def add(self, k, d):
        self.send(bytes([ADD]) + blob(k) + struct.pack("<q", d))
        return self.i64()

    def check(self, keys):
        self.send(bytes([CHECK]) + struct.pack("<Q", len(keys)) + b"".join(blob(k) for k in keys))
        return self.u8()

    def closed_by_server(self):
        self.s.settimeout(5.0)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def pattern(n, seed):
    """n bytes with NULs in them, different for each seed: byte i is
    ((i % 1279) * 131 + seed * 7) & 255, or 0 where i % 1279 % 5 == 0
    (test_store.c makes the same bytes)"""
    t = bytes(((j * 131 + seed * 7) & 0xFF) if j % 5 else 0 for j in range(1279))
    return (t * (n // 1279 + 1))[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--env", action="store_true", help="take the store from MASTER_ADDR / MASTER_PORT")
    ap.add_argument("--c-keys", action="store_true", help="check the keys test_store set, leave py/ keys")
    a = ap.parse_args()
    host, port = a.host, a.port
    if a.env:
        host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ["MASTER_PORT"])
    ns = f"pyclient{os.getpid()}/".encode()

    c = Client(host, port)
    d = Client(host, port, ping=False)  # clients before PING existed send VALIDATE only

    # SET / GET, binary and empty values, a missing key
    c.set(ns + b"a", b"x\0y")
    check(c.get(ns + b"a") == b"x\0y", "GET returns what SET stored, NULs included")
    c.set(ns + b"empty", b"")
    check(c.get(ns + b"empty") == b"", "an empty value")
    c.send(bytes([GET]) + blob(ns + b"missing"))
    check(c.value() == b"", "GET of a missing key answers an empty value (libuv server)")
    t0 = time.monotonic()
    check(c.get(ns + b"missing", timeout=0.3) is None, "WAIT for a missing key times out")
    check(time.monotonic() - t0 < 3, "the WAIT timeout is kept")
    check(c.get(ns + b"a") == b"x\0y", "the connection works after CANCEL_WAIT")

    # a WAIT answered when another client sets the key
    c.send(bytes([WAIT]) + struct.pack("<Q", 2) + blob(ns + b"w1") + blob(ns + b"w2"))
    d.set(ns + b"w1", b"1")
    c.s.settimeout(0.3)
    try:
        early = c.s.recv(1)
    except socket.timeout:
        early = b""
    c.s.settimeout(10.0)
    check(early == b"", "WAIT on two keys is not answered after only one exists")
    d.set(ns + b"w2", b"2")
    check(c.u8() == 0, "WAIT answered STOP_WAITING once both keys exist")

    # ADD, CHECK
    check(c.add(ns + b"n", 5) == 5, "ADD to a missing key starts from 0")
    check(d.add(ns + b"n", -7) == -2, "ADD of a negative number")
    check(c.get(ns + b"n") == b"-2", "ADD keeps the number as decimal text")
    check(c.check([ns + b"a", ns + b"n"]) == 0, "CHECK answers READY when all keys exist")
    check(c.check([ns + b"a", ns + b"nope"]) == 1, "CHECK answers NOT_READY when one is missing")

    # COMPARE_SET
    c.send(bytes([COMPARE_SET]) + blob(ns + b"cas") + blob(b"") + blob(b"first"))
    check(c.value() == b"first", "COMPARE_SET with an empty expected value creates the key")
    c.send(bytes([COMPARE_SET]) + blob(ns + b"cas") + blob(b"wrong") + blob(b"second"))
    check(c.value() == b"first", "COMPARE_SET with a wrong expected value keeps the value")
    c.send(bytes([COMPARE_SET]) + blob(ns + b"cas") + blob(b"first") + blob(b"second"))
    check(c.value() == b"second", "COMPARE_SET with the right expected value swaps")
    c.send(bytes([COMPARE_SET]) + blob(ns + b"cas-missing") + blob(b"e") + blob(b"d"))
    check(c.value() == b"e", "COMPARE_SET on a missing key answers the expected value")

    # APPEND, DELETE_KEY, GETNUMKEYS, MULTI_GET, MULTI_SET, LIST_KEYS
    c.send(bytes([APPEND]) + blob(ns + b"ap") + blob(b"ab"))
    c.send(bytes([APPEND]) + blob(ns + b"ap") + blob(b"cd"))
    check(c.get(ns + b"ap") == b"abcd", "APPEND appends")
    c.send(bytes([GETNUMKEYS]))
    before = c.i64()
    c.send(bytes([DELETE_KEY]) + blob(ns + b"ap"))
    check(c.i64() == 1, "DELETE_KEY of a key answers 1")
    c.send(bytes([DELETE_KEY]) + blob(ns + b"ap"))
    check(c.i64() == 0, "DELETE_KEY of a missing key answers 0")
    c.send(bytes([GETNUMKEYS]))
    check(c.i64() == before - 1, "GETNUMKEYS counts the keys")
    c.send(bytes([MULTI_SET]) + struct.pack("<Q", 2) + blob(ns + b"m1") + blob(b"v1") + blob(ns + b"m2") + blob(b"v2"))
    c.send(bytes([MULTI_GET]) + struct.pack("<Q", 3) + blob(ns + b"m1") + blob(ns + b"m2") + blob(ns + b"a"))
    check([c.value() for _ in range(3)] == [b"v1", b"v2", b"x\0y"], "MULTI_SET then MULTI_GET")
    c.send(bytes([LIST_KEYS]))
    keys = [c.value() for _ in range(c.i64())]
    check(ns + b"m1" in keys and ns + b"ap" not in keys, "LIST_KEYS lists the keys")

    # queues
    c.send(bytes([QUEUE_PUSH]) + blob(ns + b"q") + blob(b"one"))
    c.send(bytes([QUEUE_PUSH]) + blob(ns + b"q") + blob(b"two"))
    c.send(bytes([QUEUE_LEN]) + blob(ns + b"q"))
    check(c.i64() == 2, "QUEUE_LEN")
    c.send(bytes([QUEUE_POP]) + blob(ns + b"q"))
    check(c.i64() == 2 and c.value() == b"one", "QUEUE_POP is first in, first out")
    c.send(bytes([QUEUE_POP]) + blob(ns + b"q"))
    check(c.i64() == 1 and c.value() == b"two", "QUEUE_POP again")
    c.send(bytes([QUEUE_POP]) + blob(ns + b"q"))
    check(c.i64() == 0, "QUEUE_POP of an empty queue answers 0 and no value")

    # BARRIER from two clients
    c.send(bytes([BARRIER]) + blob(ns + b"bar") + struct.pack("<q", 2))
    c.s.settimeout(0.3)
    try:
        early = c.s.recv(1)
    except socket.timeout:
        early = b""
    c.s.settimeout(10.0)
    check(early == b"", "BARRIER waits for the second client")
    d.send(bytes([BARRIER]) + blob(ns + b"bar") + struct.pack("<q", 2))
    check(d.u8() == 0 and c.u8() == 0, "BARRIER releases both clients")

    # a large value, sent in pieces with pauses
    big = pattern(6 << 20, 3)
    msg = bytes([SET]) + blob(ns + b"big") + blob(big)
    for i in range(0, len(msg), 1 << 20):
        c.send(msg[i:i + (1 << 20)])
        time.sleep(0.01)
    check(d.get(ns + b"big") == big, "a 6 MiB value arrives whole")

    # misbehaving clients are dropped
    bad = Client(host, port, validate=False, ping=False)
    bad.set(ns + b"sneaky", b"1")
    check(bad.closed_by_server(), "a client that does not VALIDATE first is dropped")
    bad.close()
    bad = Client(host, port, validate=False, ping=False)
    bad.send(bytes([VALIDATE]) + struct.pack("<I", 0x12345678))
    check(bad.closed_by_server(), "a wrong VALIDATE magic is dropped")
    bad.close()
    check(c.check([ns + b"sneaky"]) == 1, "the dropped client's SET did not happen")
    bad = Client(host, port, ping=False)
    bad.send(bytes([SET]) + blob(ns + b"huge") + struct.pack("<Q", (8 << 20) + 1))
    check(bad.closed_by_server(), "a value over 8 MiB is refused")
    bad.close()

    if a.c_keys:
        # what test_store set before starting us
        check(c.get(b"c/hello") == b"from C\0with a NUL", "read the C client's key c/hello")
        check(c.get(b"c/big") == pattern(3 << 20, 1), "read the C client's 3 MiB key c/big")
        check(c.add(b"c/counter", 100) == 142, "ADD to the C client's counter")
        c.set(b"py/hello", b"from Python\0!")
        c.set(b"py/big", pattern(5 << 20, 2))
        c.set(b"py/done", b"1")
    # a client that sets and leaves at once: the value must stay
    e = Client(host, port)
    e.set(ns + b"parting", b"bye")
    e.close()
    check(c.get(ns + b"parting") == b"bye", "a SET right before closing is kept")

    c.close()
    d.close()
    print(f"store_client: {passed} checks passed" if not failed else f"store_client: {failed} of {passed + failed} checks failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
