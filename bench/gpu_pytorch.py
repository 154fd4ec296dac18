#!/usr/bin/env python3
"""gpu_pytorch.py — the PyTorch side of bench/gpu.sh (needs a GPU, PyTorch and
transformers). Subcommands:

  init OUT.safetensors          GPT-2 124M (GPT2LMHeadModel, no dropout) from
                                torch.manual_seed(1337), written with the
                                published model's tensor names (Conv1D layout),
                                for `launch --init`
  peak                          the GPU's measured GEMM rate, FLOP/s, fp32 and
                                bf16 (best of 10 8192^3 torch.matmul)
  train INIT DATA B T STEPS MODE
                                trains from INIT on the llm.c token file DATA
                                with pipec's settings (AdamW lr 6e-4, betas 0.9
                                0.95, eps 1e-8, weight decay 0.1 on matrices
                                and embeddings, clip 1.0, constant lr), batch B
                                of T tokens, sequence g of step s at
                                ((s-1)*B + i) * T as pipec reads it; MODE eager,
                                compile, eager-bf16 or compile-bf16 (autocast);
                                prints "step S loss L ms M" per step and
                                "tokens/s X" (median step after 3 warm-ups)
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch


def model_124m():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_positions=1024, n_embd=768, n_layer=12, n_head=12, vocab_size=50257,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(1337)
    return GPT2LMHeadModel(cfg)


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = t.detach().to(torch.float32).cpu().contiguous().numpy()
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def cmd_init(out):
    m = model_124m()
    write_safetensors(out, {k: v for k, v in m.transformer.named_parameters()})
    print("wrote %s: %d parameters" % (out, sum(p.numel() for p in m.transformer.parameters())))


def cmd_peak():
    n = 8192
    for dt in (torch.float32, torch.bfloat16):
        torch.backends.cuda.matmul.allow_tf32 = False
        a = torch.randn(n, n, device="cuda", dtype=dt)
        b = torch.randn(n, n, device="cuda", dtype=dt)
        best = 1e9
        for k in range(11):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            torch.cuda.synchronize()
            if k:
                best = min(best, time.perf_counter() - t0)
        print("peak %s %.1f TFLOP/s" % (str(dt).replace("torch.", ""), 2 * n ** 3 / best / 1e12))


def read_tokens(path):
    with open(path, "rb") as f:
        hdr = np.frombuffer(f.read(1024), dtype=np.int32)
        assert hdr[0] == 20240520, "not an llm.c token file"
        return np.frombuffer(f.read(), dtype=np.uint16)[: hdr[2]].astype(np.int64)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).reshape(v["shape"]).copy())
    return out


def cmd_train(init, data, B, T, steps, mode):
    B, T, steps = int(B), int(T), int(steps)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m = model_124m()
    m.transformer.load_state_dict(read_safetensors(init), strict=False)
    m.tie_weights()
    m = m.cuda().train()
    decay = [p for n, p in m.named_parameters() if p.dim() >= 2]
    other = [p for n, p in m.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    toks = read_tokens(data)
    span = len(toks) - T - 1
    run = torch.compile(m) if mode.startswith("compile") else m
    bf16 = mode.endswith("bf16")
    times = []
    for s in range(1, steps + 1):
        starts = [(((s - 1) * B + i) * T) % span for i in range(B)]
        x = torch.tensor(np.stack([toks[a : a + T] for a in starts]), device="cuda")
        y = torch.tensor(np.stack([toks[a + 1 : a + T + 1] for a in starts]), device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            logits = run(x).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        times.append(dt)
        print("step %d loss %.6f ms %.1f" % (s, loss.item(), dt * 1e3), flush=True)
    t = sorted(times[3:]) or times
    print("tokens/s %.0f" % (B * T / t[len(t) // 2]))


if __name__ == "__main__":
    c = sys.argv[1] if len(sys.argv) > 1 else ""
    if c == "init" and len(sys.argv) == 3:
        cmd_init(sys.argv[2])
    elif c == "peak":
        cmd_peak()
    elif c == "train" and len(sys.argv) == 8:
        cmd_train(*sys.argv[2:])
    else:
        sys.exit(__doc__)
