#!/usr/bin/env python3
"""check_kernels.py — run every CUDA kernel of kernels/*.cuh on a GPU and
compare it with a NumPy float64 reference; prints the max relative error per
kernel (max |gpu - ref| / max |ref|) and exits 1 if any is over its bound.

For a machine with an NVIDIA GPU and driver (not run by ctest). Needs only
Python 3 and NumPy; the driver API is reached through ctypes (libcuda.so.1),
so neither cuda-python nor PyTorch is required. The modules come from
tests/test_nvrtc.c, which compiles them with NVRTC and writes them out:

    cc -std=gnu11 -O2 -I. tests/test_nvrtc.c lib/nvrtc.c -ldl -o /tmp/test_nvrtc
    /tmp/test_nvrtc kernels /tmp/pipec-modules        # needs a CUDA toolkit, no GPU
    python3 tests/gpu/check_kernels.py /tmp/pipec-modules
    python3 tests/gpu/check_kernels.py /tmp/pipec-modules --only attention --small

The image for the device is <group>.sm_XY.cubin when the GPU is sm_XY (80,
90), else <group>.compute_90.ptx (JIT-compiled by the driver, sm_90 and
newer). fp32 kernels must match within 1e-4 (relative to the largest
reference value), bf16 kernels within 2e-2 (inputs are rounded to bf16
first, the reference runs on the rounded values). Launch geometry follows
the comments in each header. PIPEC_LIBCUDA names another libcuda to load.

Without a GPU, tests/gpu/emulator/build.sh makes a libcuda stand-in that
runs the same kernel sources on the CPU (one fiber per CUDA thread): it
checks the kernels' logic, not NVRTC's code, and is slow, so use --small:

    sh tests/gpu/emulator/build.sh /tmp/pipec-emu
    PIPEC_LIBCUDA=/tmp/pipec-emu/libcuda-emu.so python3 tests/gpu/check_kernels.py /tmp/pipec-modules --small
"""
import argparse
import ctypes as C
import math
import os
import sys

import numpy as np

# ---------------------------------------------------------------- driver API


class Cuda:
    """The few driver API calls we need, through ctypes."""

    def __init__(self):
        self.lib = C.CDLL(os.environ.get("PIPEC_LIBCUDA", "libcuda.so.1"))
        self.check(self.lib.cuInit(0), "cuInit")
        dev = C.c_int()
        self.check(self.lib.cuDeviceGet(C.byref(dev), 0), "cuDeviceGet")
        self.dev = dev.value
        self.major = self.attribute(75)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        self.minor = self.attribute(76)
        self.sms = self.attribute(16)  # CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
        ctx = C.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(C.byref(ctx), self.dev), "cuDevicePrimaryCtxRetain")
        self.check(self.lib.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
        self.lib.cuMemAlloc_v2.argtypes = [C.POINTER(C.c_uint64), C.c_size_t]
        self.lib.cuMemFree_v2.argtypes = [C.c_uint64]
        self.lib.cuMemcpyHtoD_v2.argtypes = [C.c_uint64, C.c_void_p, C.c_size_t]
        self.lib.cuMemcpyDtoH_v2.argtypes = [C.c_void_p, C.c_uint64, C.c_size_t]
        self.lib.cuModuleGetFunction.argtypes = [C.POINTER(C.c_void_p), C.c_void_p, C.c_char_p]
        self.lib.cuFuncSetAttribute.argtypes = [C.c_void_p, C.c_int, C.c_int]
        self.lib.cuLaunchKernel.argtypes = [C.c_void_p] + [C.c_uint] * 7 + [C.c_void_p, C.c_void_p, C.c_void_p]
        self.modules = {}

    def check(self, err, what):
        if err != 0:
            msg = C.c_char_p()
            self.lib.cuGetErrorString(err, C.byref(msg))
            raise RuntimeError(f"{what}: CUDA error {err} ({msg.value.decode() if msg.value else '?'})")

    def attribute(self, attr):
        v = C.c_int()
        self.check(self.lib.cuDeviceGetAttribute(C.byref(v), attr, self.dev), "cuDeviceGetAttribute")
        return v.value

    def module(self, modules_dir, group):
        if group in self.modules:
            return self.modules[group]
        # the exact cubin, else one for an earlier GPU of the same major
        # version (binary compatible), else the PTX (sm_90 and newer)
        names = [f"{group}.sm_{self.major}{self.minor}.cubin", f"{group}.sm_{self.major}0.cubin",
                 f"{group}.compute_90.ptx" if self.major >= 9 else None]
        found = [n for n in names if n and os.path.exists(os.path.join(modules_dir, n))]
        if not found:
            raise RuntimeError(f"no module for sm_{self.major}{self.minor} in {modules_dir} (looked for {names})")
        path = os.path.join(modules_dir, found[0])
        with open(path, "rb") as f:
            image = f.read() + b"\0"
        mod = C.c_void_p()
        self.check(self.lib.cuModuleLoadData(C.byref(mod), image), f"cuModuleLoadData {path}")
        self.modules[group] = (mod, os.path.basename(path))
        return self.modules[group]

    def function(self, modules_dir, group, name):
        mod, _ = self.module(modules_dir, group)
        fn = C.c_void_p()
        self.check(self.lib.cuModuleGetFunction(C.byref(fn), mod, name.encode()), f"cuModuleGetFunction {name}")
        return fn

    def alloc(self, nbytes):
        p = C.c_uint64()
        self.check(self.lib.cuMemAlloc_v2(C.byref(p), max(nbytes, 16)), "cuMemAlloc")
        return p.value

    def upload(self, ptr, a):
        a = np.ascontiguousarray(a)
        self.check(self.lib.cuMemcpyHtoD_v2(ptr, a.ctypes.data, a.nbytes), "cuMemcpyHtoD")

    def download(self, ptr, a):
        self.check(self.lib.cuMemcpyDtoH_v2(a.ctypes.data, ptr, a.nbytes), "cuMemcpyDtoH")
        return a

    def free(self, ptr):
        self.lib.cuMemFree_v2(ptr)

    def launch(self, fn, grid, block, args, smem=0):
        if smem > 48 * 1024:
            self.check(self.lib.cuFuncSetAttribute(fn, 8, smem), "cuFuncSetAttribute")  # MAX_DYNAMIC_SHARED_SIZE_BYTES
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        params = (C.c_void_p * len(args))(*[C.cast(C.pointer(a), C.c_void_p) for a in args])
        self.check(self.lib.cuLaunchKernel(fn, *grid, *block, smem, None, params, None), "cuLaunchKernel")
        self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize (the kernel)")


class PipecAttn(C.Structure):  # KAttn in lib/kernels.h, PipecAttn in kernels/attention.cuh
    _fields_ = [(n, C.c_int) for n in
                ("B", "T", "Tk", "NH", "NH_kv", "HS", "causal", "q_stride", "kv_stride", "out_stride")]


# ---------------------------------------------------------------- element types


def to_bf16_bits(x):
    """float32 -> bf16 bits, round to nearest even (NaN kept NaN)"""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    r[nan] = 0x7FC0
    return r


def from_bf16_bits(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class DType:
    def __init__(self, name, np_store, tol):
        self.name, self.np_store, self.tol = name, np_store, tol

    def store(self, x):  # float values -> what the GPU holds
        x = np.asarray(x, dtype=np.float32)
        return to_bf16_bits(x) if self.name == "bf16" else x.copy()

    def load(self, raw):  # what the GPU holds -> float64
        return (from_bf16_bits(raw) if self.name == "bf16" else raw).astype(np.float64)

    def round(self, x):  # the value the GPU sees after storing x
        return self.load(self.store(x))


F32 = DType("f32", np.float32, 1e-4)
BF16 = DType("bf16", np.uint16, 2e-2)

# ---------------------------------------------------------------- the harness


class Run:
    def __init__(self, cuda, modules_dir, small):
        self.cuda, self.dir, self.small = cuda, modules_dir, small
        self.rng = np.random.default_rng(1234)
        self.results = []  # (name, error, bound)
        self.ptrs = []

    def rand(self, *shape, lo=-1.0, hi=1.0):
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)

    # device buffers: raw numpy arrays (float32, uint16, int32, double) mirrored on the GPU
    def buf(self, host):
        host = np.ascontiguousarray(host)
        p = self.cuda.alloc(host.nbytes)
        self.cuda.upload(p, host)
        self.ptrs.append(p)
        return p

    def empty(self, n, np_dtype):
        p = self.cuda.alloc(n * np.dtype(np_dtype).itemsize)
        self.cuda.upload(p, np.zeros(n, np_dtype))
        self.ptrs.append(p)
        return p

    def get(self, p, n, np_dtype):
        return self.cuda.download(p, np.empty(n, np_dtype))

    def free_all(self):
        for p in self.ptrs:
            self.cuda.free(p)
        self.ptrs = []

    def call(self, group, name, grid, block, args, smem=0):
        fn = self.cuda.function(self.dir, group, name)
        self.cuda.launch(fn, grid, block, args, smem)

    def compare(self, name, got, ref, bound):
        got = np.asarray(got, dtype=np.float64).ravel()
        ref = np.asarray(ref, dtype=np.float64).ravel()
        fin = np.isfinite(ref)
        err = 0.0
        if not np.array_equal(got[~fin], ref[~fin]):
            err = math.inf
        if fin.any():
            scale = max(np.abs(ref[fin]).max(), 1e-30)
            err = max(err, float(np.nan_to_num(np.abs(got[fin] - ref[fin]), nan=math.inf).max() / scale))
        ok = err <= bound
        self.results.append((name, err, bound))
        print(f"{'ok  ' if ok else 'FAIL'} {name:<58} max rel err {err:9.3g}  (bound {bound:g})")

    # launch geometry from the headers' comments
    def grid_stride(self, n, dt):
        v = 16 // (4 if dt is F32 else 2)
        return (max(1, min((n + 256 * v - 1) // (256 * v), 8 * self.cuda.sms)),), (256,)

    @staticmethod
    def warp_rows(n):
        return ((n + 7) // 8,), (256,)

    def colsum_geometry(self, n, c):
        tiles = (c + 31) // 32
        s = max(1, min((2 * self.cuda.sms + tiles - 1) // tiles, (n + 15) // 16, 64))
        return (tiles, s), (32, 16), s


P, I32, I64, F, U64 = C.c_uint64, C.c_int, C.c_long, C.c_float, C.c_uint64

# ---------------------------------------------------------------- references (float64)


def ref_layernorm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    return (x - mean) * rstd * w + b, mean[..., 0], rstd[..., 0]


def ref_layernorm_backward(dy, x, w, mean, rstd):
    xhat = (x - mean[:, None]) * rstd[:, None]
    dn = dy * w
    dx = rstd[:, None] * (dn - dn.mean(-1, keepdims=True) - xhat * (dn * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).sum(0), dy.sum(0)


_erf = np.vectorize(math.erf)


def ref_act(x, act):
    if act == 0:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if act == 1:
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if act == 2:
        return np.maximum(x, 0)
    if act == 3:
        return x / (1 + np.exp(-x))
    return x


def ref_act_grad(x, act):
    if act == 0:
        k = math.sqrt(2 / math.pi)
        t = np.tanh(k * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    if act == 1:
        return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    if act == 2:
        return (x > 0).astype(np.float64)
    s = 1 / (1 + np.exp(-x))
    return s * (1 + x * (1 - s))


def philox4x32_10(ctr, key):
    """ctr: (n, 4) uint64 holding u32 words, key: (2,) ints -> (n, 4) u32 words"""
    M0, M1, W0, W1, MASK = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF
    c = [ctr[:, i].astype(np.uint64) for i in range(4)]
    k0, k1 = key[0], key[1]
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = np.uint64(M0) * c[0], np.uint64(M1) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(MASK),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(MASK)]
    return np.stack(c, 1)


def ref_dropout_keep(n, p, seed, offset):
    i = np.arange(n, dtype=np.uint64)
    cnt = (np.uint64(offset) + i // np.uint64(4)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    ctr = np.stack([cnt & np.uint64(0xFFFFFFFF), cnt >> np.uint64(32), 0 * cnt, 0 * cnt], 1)
    words = philox4x32_10(ctr, (seed & 0xFFFFFFFF, seed >> 32))
    word = words[np.arange(n), (i % np.uint64(4)).astype(np.int64)]
    return word >= np.uint64(int(np.float32(p) * np.float32(4294967296.0)))


def ref_attention(q, k, v, dout, causal):
    """q (B, NH, T, HS), k v (B, NHkv, Tk, HS), dout like q -> out, lse, dq, dk, dv"""
    B, NH, T, HS = q.shape
    NHkv, Tk = k.shape[1], k.shape[2]
    g = NH // NHkv
    kk, vv = np.repeat(k, g, axis=1), np.repeat(v, g, axis=1)
    s = q @ kk.transpose(0, 1, 3, 2) / math.sqrt(HS)
    if causal:
        t = np.arange(T)[:, None]
        j = np.arange(Tk)[None, :]
        s = np.where(j <= t + (Tk - T), s, -np.inf)
    m = s.max(-1, keepdims=True)
    visible = np.isfinite(m)
    m = np.where(visible, m, 0)
    e = np.exp(s - m)
    l = e.sum(-1, keepdims=True)
    p = np.where(visible, e / np.where(l > 0, l, 1), 0)
    out = p @ vv
    lse = np.where(visible, m + np.log(np.where(l > 0, l, 1)), -np.inf)[..., 0]
    dp = dout @ vv.transpose(0, 1, 3, 2)
    delta = (dout * out).sum(-1, keepdims=True)
    ds = p * (dp - delta)
    dq = ds @ kk / math.sqrt(HS)
    dk = (ds.transpose(0, 1, 3, 2) @ q / math.sqrt(HS)).reshape(B, NHkv, g, Tk, HS).sum(2)
    dv = (p.transpose(0, 1, 3, 2) @ dout).reshape(B, NHkv, g, Tk, HS).sum(2)
    return out, lse, dq, dk, dv


# ---------------------------------------------------------------- the checks


def check_layernorm(r, dt):
    N, Cn = (16, 67) if r.small else (256, 771)
    for Cc in (Cn - Cn % 8, Cn):  # a width that vectorises and one that does not
        x, w, b, y = r.rand(N, Cc, lo=-2, hi=3), r.rand(Cc), r.rand(Cc), r.rand(N, Cc)
        X, W, Bv, Y = dt.round(x), dt.round(w), dt.round(b), dt.round(y)
        out, mean, rstd = r.empty(N * Cc, dt.np_store), r.empty(N, np.float32), r.empty(N, np.float32)
        px, pw, pb = r.buf(dt.store(x)), r.buf(dt.store(w)), r.buf(dt.store(b))
        g, bl = r.warp_rows(N)
        r.call("layernorm", f"pipec_layernorm_forward_{dt.name}", g, bl,
               [P(out), P(mean), P(rstd), P(px), P(pw), P(pb), I32(N), I32(Cc), F(1e-5)])
        ro, rm, rr = ref_layernorm(X, W, Bv, 1e-5)
        r.compare(f"layernorm_forward {dt.name} C={Cc}", dt.load(r.get(out, N * Cc, dt.np_store)), ro, dt.tol)
        r.compare(f"layernorm_forward mean,rstd {dt.name} C={Cc}",
                  np.concatenate([r.get(mean, N, np.float32), r.get(rstd, N, np.float32)]), np.concatenate([rm, rr]), 1e-4)

        resid, py = r.empty(N * Cc, dt.np_store), r.buf(dt.store(y))
        r.call("layernorm", f"pipec_residual_layernorm_forward_{dt.name}", g, bl,
               [P(resid), P(out), P(mean), P(rstd), P(px), P(py), P(pw), P(pb), I32(N), I32(Cc), F(1e-5)])
        R = dt.round(X + Y)
        ro2, _, _ = ref_layernorm(R, W, Bv, 1e-5)
        r.compare(f"residual_layernorm_forward resid {dt.name} C={Cc}", dt.load(r.get(resid, N * Cc, dt.np_store)), R, dt.tol)
        r.compare(f"residual_layernorm_forward out {dt.name} C={Cc}", dt.load(r.get(out, N * Cc, dt.np_store)), ro2, dt.tol)

        # backward, with the statistics of x
        r.call("layernorm", f"pipec_layernorm_forward_{dt.name}", g, bl,
               [P(out), P(mean), P(rstd), P(px), P(pw), P(pb), I32(N), I32(Cc), F(1e-5)])
        dy = r.rand(N, Cc)
        DY = dt.round(dy)
        pdy, dx = r.buf(dt.store(dy)), r.empty(N * Cc, dt.np_store)
        r.call("layernorm", f"pipec_layernorm_backward_input_{dt.name}", g, bl,
               [P(dx), P(pdy), P(px), P(pw), P(mean), P(rstd), I32(N), I32(Cc)])
        rdx, rdw, rdb = ref_layernorm_backward(DY, X, W, rm, rr)
        r.compare(f"layernorm_backward_input {dt.name} C={Cc}", dt.load(r.get(dx, N * Cc, dt.np_store)), rdx, dt.tol)
        gg, bb, S = r.colsum_geometry(N, Cc)
        part = r.empty(S * 2 * Cc, np.float32)
        r.call("layernorm", f"pipec_layernorm_backward_params_{dt.name}", gg, bb,
               [P(part), P(pdy), P(px), P(mean), P(rstd), I32(N), I32(Cc)])
        dw0, db0 = r.rand(Cc), r.rand(Cc)
        pdw, pdb = r.buf(dt.store(dw0)), r.buf(dt.store(db0))
        for dst, off in ((pdw, 0), (pdb, Cc * 4)):
            r.call("reduce", f"pipec_colsum_accumulate_{dt.name}", ((Cc + 255) // 256,), (256,),
                   [P(dst), P(part + off), I32(S), I32(Cc), I64(2 * Cc)])
        r.compare(f"layernorm_backward_params+colsum dweight {dt.name} C={Cc}",
                  dt.load(r.get(pdw, Cc, dt.np_store)), dt.round(dw0) + rdw, dt.tol)
        r.compare(f"layernorm_backward_params+colsum dbias {dt.name} C={Cc}",
                  dt.load(r.get(pdb, Cc, dt.np_store)), dt.round(db0) + rdb, dt.tol)


def check_rmsnorm(r, dt):
    N, Cc = (16, 37) if r.small else (256, 1024)
    x, w, dy = r.rand(N, Cc, lo=-2, hi=3), r.rand(Cc), r.rand(N, Cc)
    X, W, DY = dt.round(x), dt.round(w), dt.round(dy)
    px, pw, pdy = r.buf(dt.store(x)), r.buf(dt.store(w)), r.buf(dt.store(dy))
    out, rstd, dx = r.empty(N * Cc, dt.np_store), r.empty(N, np.float32), r.empty(N * Cc, dt.np_store)
    g, bl = r.warp_rows(N)
    r.call("rmsnorm", f"pipec_rmsnorm_forward_{dt.name}", g, bl, [P(out), P(rstd), P(px), P(pw), I32(N), I32(Cc), F(1e-5)])
    rr = 1 / np.sqrt((X * X).mean(-1) + 1e-5)
    r.compare(f"rmsnorm_forward {dt.name}", dt.load(r.get(out, N * Cc, dt.np_store)), X * rr[:, None] * W, dt.tol)
    r.compare(f"rmsnorm_forward rstd {dt.name}", r.get(rstd, N, np.float32), rr, 1e-4)
    r.call("rmsnorm", f"pipec_rmsnorm_backward_input_{dt.name}", g, bl,
           [P(dx), P(pdy), P(px), P(pw), P(rstd), I32(N), I32(Cc)])
    xhat = X * rr[:, None]
    dn = DY * W
    rdx = rr[:, None] * (dn - xhat * (dn * xhat).mean(-1, keepdims=True))
    r.compare(f"rmsnorm_backward_input {dt.name}", dt.load(r.get(dx, N * Cc, dt.np_store)), rdx, dt.tol)
    gg, bb, S = r.colsum_geometry(N, Cc)
    part, pdw = r.empty(S * Cc, np.float32), r.buf(dt.store(np.zeros(Cc)))
    r.call("rmsnorm", f"pipec_rmsnorm_backward_params_{dt.name}", gg, bb, [P(part), P(pdy), P(px), P(rstd), I32(N), I32(Cc)])
    r.call("reduce", f"pipec_colsum_accumulate_{dt.name}", ((Cc + 255) // 256,), (256,), [P(pdw), P(part), I32(S), I32(Cc), I64(Cc)])
    r.compare(f"rmsnorm_backward_params+colsum {dt.name}", dt.load(r.get(pdw, Cc, dt.np_store)), (DY * xhat).sum(0), dt.tol)


def check_activation(r, dt):
    n = 10007 if r.small else 1 << 20
    for act, name in enumerate(("gelu_tanh", "gelu_erf", "relu", "silu")):
        x, dy = r.rand(n, lo=-5, hi=5), r.rand(n)
        X, DY = dt.round(x), dt.round(dy)
        px, pdy, out = r.buf(dt.store(x)), r.buf(dt.store(dy)), r.empty(n, dt.np_store)
        g, bl = r.grid_stride(n, dt)
        r.call("activation", f"pipec_act_forward_{dt.name}", g, bl, [P(out), P(px), I64(n), I32(act)])
        r.compare(f"act_forward {name} {dt.name}", dt.load(r.get(out, n, dt.np_store)), ref_act(X, act), dt.tol)
        r.call("activation", f"pipec_act_backward_{dt.name}", g, bl, [P(out), P(pdy), P(px), I64(n), I32(act)])
        r.compare(f"act_backward {name} {dt.name}", dt.load(r.get(out, n, dt.np_store)), DY * ref_act_grad(X, act), dt.tol)
    N, Cc = (9, 37) if r.small else (512, 3072)
    x, b = r.rand(N, Cc, lo=-3, hi=3), r.rand(Cc)
    px, pb, out = r.buf(dt.store(x)), r.buf(dt.store(b)), r.empty(N * Cc, dt.np_store)
    g, bl = r.warp_rows(N)
    r.call("activation", f"pipec_bias_act_forward_{dt.name}", g, bl, [P(out), P(px), P(pb), I32(N), I32(Cc), I32(0)])
    r.compare(f"bias_act_forward gelu_tanh {dt.name}", dt.load(r.get(out, N * Cc, dt.np_store)),
              ref_act(dt.round(dt.round(x) + dt.round(b)), 0), dt.tol)


def check_matmul_epilogue(r, dt):
    N, OC = (9, 37) if r.small else (512, 2304)
    x, b, dout = r.rand(N, OC, lo=-3, hi=3), r.rand(OC), r.rand(N, OC)
    PRE = dt.round(dt.round(x) + dt.round(b))
    pb, pdo = r.buf(dt.store(b)), r.buf(dt.store(dout))
    g, bl = r.warp_rows(N)
    po = r.buf(dt.store(x))
    r.call("matmul_epilogue", f"pipec_matmul_bias_forward_{dt.name}", g, bl, [P(po), P(pb), I32(N), I32(OC)])
    r.compare(f"matmul_bias_forward {dt.name}", dt.load(r.get(po, N * OC, dt.np_store)), PRE, dt.tol)
    po, ppre = r.buf(dt.store(x)), r.empty(N * OC, dt.np_store)
    r.call("matmul_epilogue", f"pipec_matmul_bias_act_forward_{dt.name}", g, bl,
           [P(po), P(ppre), P(pb), I32(N), I32(OC), I32(3)])
    r.compare(f"matmul_bias_act_forward silu {dt.name}", dt.load(r.get(po, N * OC, dt.np_store)), ref_act(PRE, 3), dt.tol)
    r.compare(f"matmul_bias_act_forward pre {dt.name}", dt.load(r.get(ppre, N * OC, dt.np_store)), PRE, dt.tol)
    gg, bb, S = r.colsum_geometry(N, OC)
    part, pdb = r.empty(S * OC, np.float32), r.buf(dt.store(np.zeros(OC)))
    r.call("matmul_epilogue", f"pipec_matmul_backward_bias_{dt.name}", gg, bb, [P(part), P(pdo), I32(N), I32(OC)])
    r.call("reduce", f"pipec_colsum_accumulate_{dt.name}", ((OC + 255) // 256,), (256,), [P(pdb), P(part), I32(S), I32(OC), I64(OC)])
    DO = dt.round(dout)
    r.compare(f"matmul_backward_bias+colsum {dt.name}", dt.load(r.get(pdb, OC, dt.np_store)), DO.sum(0), dt.tol)
    pdb = r.buf(dt.store(np.zeros(OC)))
    r.call("matmul_epilogue", f"pipec_matmul_bias_act_backward_{dt.name}", gg, bb,
           [P(pdo), P(part), P(pdo), P(ppre), I32(N), I32(OC), I32(3)])
    r.call("reduce", f"pipec_colsum_accumulate_{dt.name}", ((OC + 255) // 256,), (256,), [P(pdb), P(part), I32(S), I32(OC), I64(OC)])
    rdpre = DO * ref_act_grad(PRE, 3)
    r.compare(f"matmul_bias_act_backward dpre {dt.name}", dt.load(r.get(pdo, N * OC, dt.np_store)), rdpre, dt.tol)
    r.compare(f"matmul_bias_act_backward dbias {dt.name}", dt.load(r.get(pdb, OC, dt.np_store)), rdpre.sum(0), dt.tol)


def check_elementwise(r, dt):
    n = 10007 if r.small else (1 << 22) + 3
    a, b = r.rand(n), r.rand(n)
    A, Bv = dt.round(a), dt.round(b)
    pa, pb, out = r.buf(dt.store(a)), r.buf(dt.store(b)), r.empty(n, dt.np_store)
    g, bl = r.grid_stride(n, dt)
    for name, ref in (("add", A + Bv), ("mul", A * Bv), ("sub", A - Bv)):
        r.call("elementwise", f"pipec_{name}_{dt.name}", g, bl, [P(out), P(pa), P(pb), I64(n)])
        r.compare(f"{name} {dt.name}", dt.load(r.get(out, n, dt.np_store)), ref, dt.tol)
    r.call("elementwise", f"pipec_scale_copy_{dt.name}", g, bl, [P(out), P(pa), I64(n), F(-1.5)])
    r.compare(f"scale_copy {dt.name}", dt.load(r.get(out, n, dt.np_store)), A * -1.5, dt.tol)
    r.call("elementwise", f"pipec_accumulate_{dt.name}", g, bl, [P(pa), P(pb), I64(n)])
    r.compare(f"accumulate {dt.name}", dt.load(r.get(pa, n, dt.np_store)), A + Bv, dt.tol)
    r.call("elementwise", f"pipec_scale_{dt.name}", g, bl, [P(pb), I64(n), F(0.25)])
    r.compare(f"scale {dt.name}", dt.load(r.get(pb, n, dt.np_store)), Bv * 0.25, dt.tol)


def check_dropout(r, dt):
    n, p, seed, offset = (10007 if r.small else (1 << 20) + 5), 0.1, 0x0123456789ABCDEF, 0xFFFFFFFE
    x = r.rand(n)
    X = dt.round(x)
    px, out = r.buf(dt.store(x)), r.empty(n, dt.np_store)
    g, bl = r.grid_stride(n, dt)
    keep = ref_dropout_keep(n, p, seed, offset)
    ref = dt.round(np.where(keep, X * np.float32(1 / np.float32(1 - np.float32(p))), 0))
    for name in ("forward", "backward"):
        r.call("dropout", f"pipec_dropout_{name}_{dt.name}", g, bl, [P(out), P(px), I64(n), F(p), U64(seed), U64(offset)])
        got = dt.load(r.get(out, n, dt.np_store))
        r.compare(f"dropout_{name} {dt.name} (kept {np.count_nonzero(got) / n:.4f})", got, ref, dt.tol)


def check_softmax(r, dt):
    N, Cc = (5, 1000) if r.small else (256, 50257)
    x = r.rand(N, Cc, lo=-6, hi=6)
    x[0, :7] = -np.inf  # masked entries
    X = dt.round(x)
    px, out = r.buf(dt.store(x)), r.empty(N * Cc, dt.np_store)
    r.call("softmax", f"pipec_softmax_forward_{dt.name}", (N,), (256,), [P(out), P(px), I32(N), I32(Cc)])
    e = np.exp(X - X.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    r.compare(f"softmax_forward {dt.name}", dt.load(r.get(out, N * Cc, dt.np_store)), ref, dt.tol)
    dy = r.rand(N, Cc)
    DY, Y = dt.round(dy), dt.load(r.get(out, N * Cc, dt.np_store)).reshape(N, Cc)
    pdy, dx = r.buf(dt.store(dy)), r.empty(N * Cc, dt.np_store)
    r.call("softmax", f"pipec_softmax_backward_{dt.name}", (N,), (256,), [P(dx), P(pdy), P(out), I32(N), I32(Cc)])
    r.compare(f"softmax_backward {dt.name}", dt.load(r.get(dx, N * Cc, dt.np_store)),
              Y * (DY - (DY * Y).sum(-1, keepdims=True)), dt.tol)


def check_crossentropy(r, dt):
    N, V = (6, 1001) if r.small else (64, 50257)
    x = r.rand(N, V, lo=-8, hi=8)
    t = r.rng.integers(0, V, size=N).astype(np.int32)
    t[1] = -1  # ignored
    X = dt.round(x)
    lse = np.log(np.exp(X - X.max(-1, keepdims=True)).sum(-1)) + X.max(-1)
    ok = t >= 0
    rloss = np.where(ok, lse - X[np.arange(N), np.maximum(t, 0)], 0)
    onehot = np.zeros_like(X)
    onehot[np.arange(N)[ok], t[ok]] = 1
    scale = 1.0 / N
    rd = np.where(ok[:, None], (np.exp(X - lse[:, None]) - onehot) * scale, 0)
    px, pt = r.buf(dt.store(x)), r.buf(t)
    losses, dl = r.empty(N, np.float32), r.empty(N * V, dt.np_store)
    r.call("crossentropy", f"pipec_crossentropy_forward_backward_{dt.name}", (N,), (512,),
           [P(losses), P(dl), P(px), P(pt), I32(N), I32(V), F(scale)])
    r.compare(f"crossentropy losses {dt.name}", r.get(losses, N, np.float32), rloss, 1e-4)
    r.compare(f"crossentropy dlogits {dt.name}", dt.load(r.get(dl, N * V, dt.np_store)), rd, dt.tol)
    r.call("crossentropy", f"pipec_crossentropy_forward_backward_{dt.name}", (N,), (512,),
           [P(losses), P(px), P(px), P(pt), I32(N), I32(V), F(scale)])
    r.compare(f"crossentropy in place dlogits {dt.name}", dt.load(r.get(px, N * V, dt.np_store)), rd, dt.tol)


def check_embedding(r, dt):
    B, T, Cc, V = (2, 5, 40, 7) if r.small else (8, 1024, 768, 50257)
    wte, wpe, dout = r.rand(V, Cc), r.rand(T, Cc), r.rand(B * T, Cc)
    tok = r.rng.integers(0, V, size=B * T).astype(np.int32)
    WTE, WPE, DO = dt.round(wte), dt.round(wpe), dt.round(dout)
    pwte, pwpe, ptok, pdo = r.buf(dt.store(wte)), r.buf(dt.store(wpe)), r.buf(tok), r.buf(dt.store(dout))
    out = r.empty(B * T * Cc, dt.np_store)
    g, bl = r.warp_rows(B * T)
    r.call("embedding", f"pipec_embedding_forward_{dt.name}", g, bl, [P(out), P(ptok), P(pwte), P(pwpe), I32(B), I32(T), I32(Cc)])
    r.compare(f"embedding_forward {dt.name}", dt.load(r.get(out, B * T * Cc, dt.np_store)),
              WTE[tok] + np.tile(WPE, (B, 1)), dt.tol)
    dwte, dwpe = r.buf(dt.store(np.zeros((V, Cc)))), r.buf(dt.store(np.zeros((T, Cc))))
    r.call("embedding", f"pipec_embedding_backward_wte_{dt.name}", g, bl, [P(dwte), P(pdo), P(ptok), I32(B), I32(T), I32(Cc)])
    g2, bl2 = r.grid_stride(T * Cc, dt)
    r.call("embedding", f"pipec_embedding_backward_wpe_{dt.name}", g2, bl2, [P(dwpe), P(pdo), I32(B), I32(T), I32(Cc)])
    rw = np.zeros((V, Cc))
    np.add.at(rw, tok, DO)
    # bf16 atomics round every addition: a token seen k times drifts by ~k/2 ulp
    r.compare(f"embedding_backward_wte {dt.name}", dt.load(r.get(dwte, V * Cc, dt.np_store)), rw,
              dt.tol if dt is F32 else 5e-2)
    r.compare(f"embedding_backward_wpe {dt.name}", dt.load(r.get(dwpe, T * Cc, dt.np_store)),
              DO.reshape(B, T, Cc).sum(0), dt.tol)
    if dt is F32:  # untyped
        pos = r.empty(B * T, np.int32)
        r.call("embedding", "pipec_positions", ((B * T + 255) // 256,), (256,), [P(pos), I32(B * T), I32(T)])
        r.compare("positions", r.get(pos, B * T, np.int32), np.arange(B * T) % T, 0)
        r.call("embedding", "pipec_fill_int", ((B * T + 255) // 256,), (256,), [P(pos), I32(B * T), I32(11)])
        r.compare("fill_int", r.get(pos, B * T, np.int32), np.full(B * T, 11), 0)


def check_adamw(r, dt):
    n = 10007 if r.small else (1 << 20) + 1
    lr, b1, b2, eps, wd, t = 1e-3, 0.9, 0.95, 1e-8, 0.1, 7
    for use_master in (False, True):
        p, g = r.rand(n), r.rand(n)
        m, v = r.rand(n, lo=-0.1, hi=0.1), r.rand(n, lo=0, hi=0.1)
        master = p + np.float32(1e-4) * r.rand(n)
        P0 = master.astype(np.float64) if use_master else dt.round(p)
        G = dt.round(g)
        rm = b1 * m + (1 - b1) * G
        rv = b2 * v + (1 - b2) * G * G
        rp = P0 - lr * (rm / (1 - b1 ** t) / (np.sqrt(rv / (1 - b2 ** t)) + eps) + wd * P0)
        pp, pg, pm, pv = r.buf(dt.store(p)), r.buf(dt.store(g)), r.buf(m), r.buf(v)
        pmaster = r.buf(master) if use_master else 0
        gr, bl = r.grid_stride(n, dt)
        r.call("adamw", f"pipec_adamw_{dt.name}", gr, bl,
               [P(pp), P(pmaster), P(pg), P(pm), P(pv), I64(n), F(lr), F(b1), F(b2), F(eps), F(wd), I32(t)])
        tag = "master" if use_master else "plain"
        r.compare(f"adamw param ({tag}) {dt.name}", dt.load(r.get(pp, n, dt.np_store)), rp, dt.tol)
        r.compare(f"adamw m, v ({tag}) {dt.name}", np.concatenate([r.get(pm, n, np.float32), r.get(pv, n, np.float32)]),
                  np.concatenate([rm, rv]), 1e-4)
        if use_master:
            r.compare(f"adamw master {dt.name}", r.get(pmaster, n, np.float32), rp, 1e-5)


def check_reduce(r, dt):
    n = 10007 if r.small else 124_000_003 // 8
    x = r.rand(n)
    X = dt.round(x)
    px = r.buf(dt.store(x))
    gr, bl = r.grid_stride(n, dt)
    G = min(gr[0], 1024)
    part, out = r.empty(G, np.float64), r.empty(1, np.float64)
    r.call("reduce", f"pipec_sumsq_partial_{dt.name}", (G,), (256,), [P(part), P(px), I64(n)])
    r.call("reduce", "pipec_sumsq_finish", (1,), (1024,), [P(out), P(part), I32(G)])
    r.compare(f"sumsq_partial+finish {dt.name}", r.get(out, 1, np.float64), [(X * X).sum()], 1e-6)


def check_attention(r, dt):
    cases = [  # B, T, Tk, NH, NH_kv, HS, causal, packed qkv
        (2, 37, 37, 4, 2, 32, 1, True), (1, 20, 45, 2, 2, 48, 0, False), (1, 5, 40, 4, 1, 16, 1, False),
        (1, 40, 10, 2, 2, 20, 1, False)]
    if not r.small:
        cases = [(4, 1024, 1024, 12, 12, 64, 1, True), (2, 512, 512, 16, 4, 128, 1, False),
                 (2, 300, 700, 8, 8, 96, 0, False)] + cases
    for B, T, Tk, NH, NHkv, HS, causal, packed in cases:
        Cq, Ckv = NH * HS, NHkv * HS
        a = PipecAttn(B=B, T=T, Tk=Tk, NH=NH, NH_kv=NHkv, HS=HS, causal=causal, out_stride=Cq)
        if packed:  # rows q | k | v (T == Tk)
            a.q_stride = a.kv_stride = Cq + 2 * Ckv
            qkv = r.rand(B, T, a.q_stride)
            QKV = dt.round(qkv)
            q, k, v = QKV[..., :Cq], QKV[..., Cq:Cq + Ckv], QKV[..., Cq + Ckv:]
            pq = r.buf(dt.store(qkv))
            isz = 4 if dt is F32 else 2
            pk, pv = pq + Cq * isz, pq + (Cq + Ckv) * isz
        else:
            a.q_stride, a.kv_stride = Cq, Ckv
            q, k, v = r.rand(B, T, Cq), r.rand(B, Tk, Ckv), r.rand(B, Tk, Ckv)
            pq, pk, pv = r.buf(dt.store(q)), r.buf(dt.store(k)), r.buf(dt.store(v))
            q, k, v = dt.round(q), dt.round(k), dt.round(v)
        heads = lambda x, h, t: x.reshape(B, t, h, HS).transpose(0, 2, 1, 3)
        dout = r.rand(B, T, Cq)
        DO = dt.round(dout)
        ro, rl, rdq, rdk, rdv = ref_attention(heads(q, NH, T), heads(k, NHkv, Tk), heads(v, NHkv, Tk), heads(DO, NH, T), causal)
        flat = lambda x: x.transpose(0, 2, 1, 3).reshape(B, x.shape[2], -1)
        out, lse, delta = r.empty(B * T * Cq, dt.np_store), r.empty(B * NH * T, np.float32), r.empty(B * NH * T, np.float32)
        r.call("attention", f"pipec_attention_forward_{dt.name}", ((T + 15) // 16, NH, B), (128,),
               [P(out), P(lse), P(pq), P(pk), P(pv), a], smem=(80 * HS + 32) * 4)
        tag = f"B{B} T{T} Tk{Tk} NH{NH}/{NHkv} HS{HS}{' causal' if causal else ''}{' packed' if packed else ''}"
        r.compare(f"attention_forward out {dt.name} {tag}", dt.load(r.get(out, B * T * Cq, dt.np_store)), flat(ro), dt.tol)
        r.compare(f"attention_forward lse {dt.name} {tag}", r.get(lse, B * NH * T, np.float32), rl, 1e-4)
        # gradients into buffers shaped like q, k, v
        if packed:
            pdq = r.empty(B * T * a.q_stride, dt.np_store)
            pdk, pdv = pdq + Cq * isz, pdq + (Cq + Ckv) * isz
        else:
            pdq, pdk, pdv = r.empty(B * T * Cq, dt.np_store), r.empty(B * Tk * Ckv, dt.np_store), r.empty(B * Tk * Ckv, dt.np_store)
        pdo = r.buf(dt.store(dout))
        r.call("attention", f"pipec_attention_backward_dq_{dt.name}", ((T + 7) // 8, NH, B), (128,),
               [P(pdq), P(delta), P(pdo), P(out), P(lse), P(pq), P(pk), P(pv), a], smem=(80 * HS + 64) * 4)
        r.call("attention", f"pipec_attention_backward_dkdv_{dt.name}", ((Tk + 7) // 8, NHkv, B), (128,),
               [P(pdk), P(pdv), P(pdo), P(lse), P(delta), P(pq), P(pk), P(pv), a], smem=(80 * HS + 128) * 4)
        if packed:
            g = dt.load(r.get(pdq, B * T * a.q_stride, dt.np_store)).reshape(B, T, -1)
            gq, gk, gv = g[..., :Cq], g[..., Cq:Cq + Ckv], g[..., Cq + Ckv:]
        else:
            gq = dt.load(r.get(pdq, B * T * Cq, dt.np_store))
            gk = dt.load(r.get(pdk, B * Tk * Ckv, dt.np_store))
            gv = dt.load(r.get(pdv, B * Tk * Ckv, dt.np_store))
        bound = dt.tol if dt is F32 else 3e-2
        r.compare(f"attention_backward dq {dt.name} {tag}", gq, flat(rdq), bound)
        r.compare(f"attention_backward dk {dt.name} {tag}", gk, flat(rdk), bound)
        r.compare(f"attention_backward dv {dt.name} {tag}", gv, flat(rdv), bound)
        r.free_all()


CHECKS = {"layernorm": check_layernorm, "rmsnorm": check_rmsnorm, "activation": check_activation,
          "matmul_epilogue": check_matmul_epilogue, "elementwise": check_elementwise, "dropout": check_dropout,
          "softmax": check_softmax, "crossentropy": check_crossentropy, "embedding": check_embedding,
          "adamw": check_adamw, "reduce": check_reduce, "attention": check_attention}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", help="directory written by test_nvrtc KERNELS_DIR OUT_DIR")
    ap.add_argument("--only", action="append", choices=sorted(CHECKS), help="check only these groups")
    ap.add_argument("--small", action="store_true", help="small shapes (quick; also covers odd sizes)")
    args = ap.parse_args()
    cuda = Cuda()
    print(f"device: compute capability {cuda.major}.{cuda.minor}, {cuda.sms} SMs")
    r = Run(cuda, args.modules, args.small)
    for group in args.only or CHECKS:
        for dt in (F32, BF16):
            CHECKS[group](r, dt)
            r.free_all()
        print(f"     ({group}: {r.cuda.modules[group][1]})")
    bad = [x for x in r.results if not x[1] <= x[2]]
    print(f"{len(r.results) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
