#!/usr/bin/env python3
"""ckpt_files.py — the weight files the checkpoint tests need, written and
read with struct + json + numpy (no safetensors or torch package).

  hf OUT [--vocab V] [--drop NAME] [--i32 NAME] [--no-prefix]
      random GPT-2 weights of gpt2-tiny's shape (dim 64, 4 layers, context
      64, vocab 512) as Hugging Face writes them: names prefixed
      "transformer.", Conv1D weights [in, out], the attn.bias mask buffers,
      lm_head.weight equal to wte
  llmc IN OUT [--truncate N]
      the weights of the HF file IN as an llm.c fp32 checkpoint (version 3),
      vocab padded to 576 rows of noise
  fake_ckpt DIR EXPECT
      a pipec checkpoint (tp 2, pp 2, step 3) of a small GPT-2 made up here,
      every shard kind (rows, cols, qkv, none) cut as lib/params.c cuts
      them; EXPECT is the HF file `pipec merge` must write from it
  loss HF
      the loss of gpt2-tiny's first step (1 rank: 8 rows of 64 tokens from
      runtime/data.c's synthetic corpus) with the weights of HF, by GPT-2's
      forward pass written here in numpy as Hugging Face computes it
  compare A B TOL
      the tensors of A and B (HF names, "transformer." dropped, mask buffers
      and lm_head ignored) agree within TOL; the worst difference is printed
"""
import json
import struct
import sys

import numpy as np

DIM, LAYERS, CTX, VOCAB = 64, 4, 64, 512
CONV = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def write_st(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, arr in tensors.items():
        dt = {np.float32: "F32", np.int32: "I32"}[arr.dtype.type]
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", {})
    out = {}
    for name, t in h.items():
        dt = {"F32": np.float32, "I32": np.int32}[t["dtype"]]
        s, e = t["data_offsets"]
        out[name] = np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt).reshape(t["shape"])
    return out, meta


def gpt2(vocab=VOCAB, dim=DIM, layers=LAYERS, ctx=CTX, seed=5):
    """HF names without prefix -> arrays in HF layout"""
    r = np.random.default_rng(seed)
    w = lambda *s: (r.standard_normal(s) * 0.02).astype(np.float32)
    v = lambda n, base: (base + r.standard_normal(n) * 0.1).astype(np.float32)
    t = {"wte.weight": w(vocab, dim), "wpe.weight": w(ctx, dim)}
    for i in range(layers):
        p = "h.%d." % i
        t[p + "ln_1.weight"], t[p + "ln_1.bias"] = v(dim, 1), v(dim, 0)
        t[p + "attn.c_attn.weight"], t[p + "attn.c_attn.bias"] = w(dim, 3 * dim), v(3 * dim, 0)
        t[p + "attn.c_proj.weight"], t[p + "attn.c_proj.bias"] = w(dim, dim), v(dim, 0)
        t[p + "ln_2.weight"], t[p + "ln_2.bias"] = v(dim, 1), v(dim, 0)
        t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"] = w(dim, 4 * dim), v(4 * dim, 0)
        t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"] = w(4 * dim, dim), v(dim, 0)
    t["ln_f.weight"], t["ln_f.bias"] = v(dim, 1), v(dim, 0)
    return t


def hf(out, args):
    vocab = int(args[args.index("--vocab") + 1]) if "--vocab" in args else VOCAB
    t = gpt2(vocab)
    f = {}
    pre = "" if "--no-prefix" in args else "transformer."
    for name, a in t.items():
        f[pre + name] = a
        if name.endswith("ln_1.weight"):  # the mask buffer HF files carry
            f[pre + name.replace("ln_1.weight", "attn.bias")] = np.tril(np.ones((CTX, CTX), np.float32)).reshape(1, 1, CTX, CTX)
    f["lm_head.weight"] = t["wte.weight"]
    if "--drop" in args:
        del f[pre + args[args.index("--drop") + 1]]
    if "--i32" in args:
        n = pre + args[args.index("--i32") + 1]
        f[n] = f[n].view(np.int32)
    write_st(out, f, {"format": "pt"})


def llmc(src, out, args):
    t, _ = read_st(src)
    t = {k.replace("transformer.", "", 1): v for k, v in t.items()}
    V, C = t["wte.weight"].shape
    T, L, Vp = t["wpe.weight"].shape[0], LAYERS, V + 64
    hdr = np.zeros(256, np.int32)
    hdr[:8] = [20240326, 3, T, V, L, 4, C, Vp]
    wte = np.concatenate([t["wte.weight"], np.full((Vp - V, C), 7.0, np.float32)])
    parts = [wte, t["wpe.weight"]]
    for s in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
              "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"):
        # llm.c stores weights [out, in]: the transpose of HF's Conv1D
        parts += [t["h.%d.%s" % (i, s)].T if s in CONV else t["h.%d.%s" % (i, s)] for i in range(L)]
    parts += [t["ln_f.weight"], t["ln_f.bias"]]
    data = hdr.tobytes() + b"".join(np.ascontiguousarray(p, np.float32).tobytes() for p in parts)
    if "--truncate" in args:
        data = data[:-int(args[args.index("--truncate") + 1])]
    open(out, "wb").write(data)


def fake_ckpt(d, expect):
    """pipec layout: [out, in]; tp 2 x pp 2, layers 0 on pp 0, 1 and ln_f on pp 1"""
    import os
    t = gpt2(vocab=32, dim=8, layers=2, ctx=16, seed=9)
    tp, pp = 2, 2
    pipec = {}
    for name, a in t.items():
        pname = name.replace("h.", "layers.", 1) if name.startswith("h.") else name
        pipec[pname] = a.T.copy() if name.endswith(CONV) else a
    def kind(n):
        if n.endswith("c_attn.weight") or n.endswith("c_attn.bias"): return "qkv"
        if n.endswith("c_fc.weight") or n.endswith("c_fc.bias") or n == "wte.weight": return "rows"
        if n.endswith("c_proj.weight"): return "cols"
        return "none"
    def shard(a, k, r):
        if k == "none": return a
        if k == "rows": n = a.shape[0] // tp; return a[n * r:n * (r + 1)]
        if k == "cols": n = a.shape[1] // tp; return a[:, n * r:n * (r + 1)]
        q = a.shape[0] // 3; n = q // tp
        return np.concatenate([a[n * r:n * (r + 1)], a[q + n * r:q + n * (r + 1)], a[2 * q + n * r:2 * q + n * (r + 1)]])
    os.makedirs(d + "/step-3", exist_ok=True)
    for k in range(pp):
        for r in range(tp):
            names = [n for n in pipec if (n.startswith("layers.0.") or n in ("wte.weight", "wpe.weight")) == (k == 0)]
            for optim in (0, 1):
                meta = {"format": "pipec-checkpoint-1", "model": "fake", "step": "3", "tp": str(tp), "pp": str(pp), "pp_rank": str(k),
                        "tp_rank": str(r), "optimizer": "adamw", "kind": "optimizer" if optim else "model"}
                f = {}
                for n in names:
                    a = pipec[n]
                    for sfx in ((".m", ".v") if optim else ("",)):
                        f[n + sfx] = np.ascontiguousarray(shard(a * (2 if sfx == ".m" else 3 if sfx == ".v" else 1), kind(n), r))
                        meta["shard:" + n + sfx] = "%s %d %d %d %d" % (kind(n), a.shape[0], a.shape[1] if a.ndim == 2 else 0,
                                                                      a.shape[0] // 3 if kind(n) == "qkv" else 0,
                                                                      a.shape[0] // 3 if kind(n) == "qkv" else 0)
                write_st("%s/step-3/%s-pp%d-tp%d.safetensors" % (d, "optim" if optim else "model", k, r), f, meta)
    write_st(expect, t, {"format": "pt"})


def mix64(z):
    M = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def loss(path):
    """runtime/data.c's make_corpus and window() for step 1, 1 rank, then GPT-2"""
    n, M, s, tok = 1 << 16, (1 << 64) - 1, 0x5EED, 0
    corpus = np.zeros(n, np.int64)
    for i in range(n):
        corpus[i] = tok
        s = (s + 0x9E3779B97F4A7C15) & M
        tok = mix64((tok * 4 + (mix64(s) & 3)) & M) % VOCAB
    T = 64
    rows = [corpus[r * T % (n - T - 1):][:T + 1] for r in range(8)]
    x_ids = np.array([r[:T] for r in rows]), np.array([r[1:] for r in rows])
    t, _ = read_st(path)
    w = {k.replace("transformer.", "", 1): v.astype(np.float64) for k, v in t.items()}
    def ln(x, p):
        m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-5) * w[p + ".weight"] + w[p + ".bias"]
    gelu = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    ids, tgt = x_ids
    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    H, hd = 4, DIM // 4
    mask = np.tril(np.ones((T, T), bool))
    for i in range(LAYERS):
        p = "h.%d." % i
        qkv = ln(x, p + "ln_1") @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]  # Conv1D: x @ W
        q, k, v = (qkv[..., j * DIM:(j + 1) * DIM].reshape(8, T, H, hd).transpose(0, 2, 1, 3) for j in range(3))
        a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        a = np.where(mask, a, -np.inf)
        a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        y = (a @ v).transpose(0, 2, 1, 3).reshape(8, T, DIM)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = gelu(ln(x, p + "ln_2") @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    logits = ln(x, "ln_f") @ w["wte.weight"].T
    logits -= logits.max(-1, keepdims=True)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    print("%.6f" % -np.take_along_axis(lp, tgt[..., None], -1).mean())


def compare(a, b, tol):
    def norm(path):
        t, meta = read_st(path)
        t = {k.replace("transformer.", "", 1): v for k, v in t.items()}
        return {k: v for k, v in t.items() if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}, meta
    (ta, ma), (tb, mb) = norm(a), norm(b)
    if sorted(ta) != sorted(tb):
        print("names differ: only in %s: %s; only in %s: %s" % (a, sorted(set(ta) - set(tb))[:5], b, sorted(set(tb) - set(ta))[:5]))
        return 1
    worst, where = 0.0, ""
    for k in ta:
        if ta[k].shape != tb[k].shape:
            print("%s: shape %s vs %s" % (k, ta[k].shape, tb[k].shape))
            return 1
        d = float(np.max(np.abs(ta[k].astype(np.float64) - tb[k]))) if ta[k].size else 0.0
        if d > worst or not where:
            worst, where = max(d, worst), k if d >= worst else where
    print("%d tensors, worst difference %.3g (%s)" % (len(ta), worst, where))
    return 0 if worst <= tol else 1


if __name__ == "__main__":
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "hf": hf(a[0], a[1:])
    elif cmd == "llmc": llmc(a[0], a[1], a[2:])
    elif cmd == "fake_ckpt": fake_ckpt(a[0], a[1])
    elif cmd == "loss": loss(a[0])
    elif cmd == "compare": sys.exit(compare(a[0], a[1], float(a[2])))
    else: sys.exit("unknown command " + cmd)
