#!/usr/bin/env python3
"""store_job.py — runs one multi-process store test (a launcher and its
ranks) and checks what came out.

  store_job.py [--each-rank N TEXT] [--expect TEXT] [--expect-fail]
               [--max-seconds S] [--env NAME=VALUE]... -- CMD ARGS...

{port} in CMD ARGS becomes a free TCP port (for mpirun's -x MASTER_PORT=,
so tests running side by side never share one). --each-rank: for every r
below N, TEXT with {rank} replaced by r appears on exactly one line of the
output. --expect: TEXT appears somewhere. The command must exit 0, or with
--expect-fail not 0, within --max-seconds (default 120; it is killed after).
TEXT is plain text, not a pattern. Exits 0 when every check holds.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--each-rank", nargs=2, action="append", default=[], metavar=("N", "TEXT"))
    ap.add_argument("--expect", action="append", default=[])
    ap.add_argument("--expect-fail", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("no command")
    port = str(free_port())
    cmd = [c.replace("{port}", port) for c in cmd]
    env = dict(os.environ)
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v.replace("{port}", port)

    print("store_job: running", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=a.max_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the launcher and every rank it started
        out, _ = p.communicate()
        print(out.decode(errors="replace"))
        print(f"store_job: FAIL: still running after {a.max_seconds:g} s")
        return 1
    out, rc = out.decode(errors="replace"), p.returncode
    dt = time.monotonic() - t0
    print(out, end="" if out.endswith("\n") or not out else "\n")
    lines = out.splitlines()
    fails = []
    if a.expect_fail and rc == 0:
        fails.append("exited 0, expected a failure")
    if not a.expect_fail and rc != 0:
        fails.append(f"exited {rc}")
    for n, text in a.each_rank:
        for r in range(int(n)):
            t = text.replace("{rank}", str(r))
            k = sum(t in line for line in lines)
            if k != 1:
                fails.append(f"{k} lines contain '{t}', expected 1")
    for t in a.expect:
        if t not in out:
            fails.append(f"no '{t}' in the output")
    for f in fails:
        print("store_job: FAIL:", f)
    print(f"store_job: {'FAIL' if fails else 'ok'} after {dt:.1f} s (exit code {rc})")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
