#!/bin/sh
# bench/gpu.sh PIPEC [B] [STEPS] — GPT-2 124M training on one GPU at T = 1024:
# pipec's stage program against PyTorch's GPT2LMHeadModel (eager and
# torch.compile) with the same batch, sequence, optimizer, data and initial
# weights, in the same run; appends a table to bench/RESULTS-gpu.md.
# Needs a GPU, python3 with torch, transformers and numpy (bench/gpu_pytorch.py).
#
#   sh bench/gpu.sh build/pipec            # B = 8, 20 steps
#
# Rows: tokens/s (median step after 3 warm-ups), MFU = 6N + 6LCT FLOPs per
# token x tokens/s / the GPU's measured GEMM peak (torch.matmul 8192^3, the
# precision each run computes in), and the loss of steps 1 and STEPS. Loss
# parity: from the same weights (written by PyTorch, read by `--init`) and
# the same tokens, step 1's loss (before any update) must agree within 1e-3
# between pipec and PyTorch eager fp32; later steps drift by rounding only.
# pipec runs twice: precision fp32, and precision bf16 (GEMMs on the bf16
# tensor cores, fp32 storage); each MFU is taken against its precision's
# peak. PyTorch runs fp32 and bf16 autocast.
set -eu
pipec=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
B=${2:-8} STEPS=${3:-20}
here=$(cd "$(dirname "$0")" && pwd)
work=${PIPEC_BENCH_DIR:-/tmp/pipec-gpu-bench}
rm -rf "$work" && mkdir -p "$work" && cd "$work"
sed -e '/^split/d' -e 's/^parallel.*/parallel { tp = 1   pp = 1 }/' \
    -e "s/batch = 32   microbatches = 8   seq = 1024   schedule = 1f1b/batch = $B   microbatches = 1   seq = 1024   schedule = gpipe/" \
    -e 's/lr_schedule = cosine(warmup = 700)   grad_clip = 1.0   steps = 1000   precision = bf16/grad_clip = 1.0   steps = '"$STEPS"'   precision = fp32   seed = 1337/' \
    -e '/data = /d' "$here/../models/gpt2.pipe" >gpt2-1gpu.pipe
grep -q "steps = $STEPS" gpt2-1gpu.pipe || { echo "bench/gpu.sh: models/gpt2.pipe changed; update the edits" >&2; exit 1; }
python3 - <<'EOF'
import numpy as np
rng = np.random.default_rng(7)
toks = rng.integers(0, 50257, size=4_000_000, dtype=np.uint16)
hdr = np.zeros(256, dtype=np.int32)
hdr[0], hdr[1], hdr[2] = 20240520, 1, len(toks)
with open("data.bin", "wb") as f:
    f.write(hdr.tobytes()); f.write(toks.tobytes())
EOF
python3 "$here/gpu_pytorch.py" init init.safetensors
python3 "$here/gpu_pytorch.py" peak | tee peak.txt
sed 's/precision = fp32/precision = bf16/' gpt2-1gpu.pipe >gpt2-1gpu-bf16.pipe
t0=$(date +%s.%N)
"$pipec" gpt2-1gpu.pipe -o build >build.log
t1=$(date +%s.%N)
"$pipec" gpt2-1gpu-bf16.pipe -o build-bf16 >build-bf16.log
PIPEC_DEVICE=cuda ./build/launch --data data.bin --init init.safetensors | tee pipec.txt
PIPEC_DEVICE=cuda ./build-bf16/launch --data data.bin --init init.safetensors | tee pipec-bf16.txt
for m in eager compile eager-bf16 compile-bf16; do
  python3 "$here/gpu_pytorch.py" train init.safetensors data.bin "$B" 1024 "$STEPS" "$m" | tee "torch-$m.txt"
done
python3 - "$B" "$STEPS" "$t0" "$t1" "$here/RESULTS-gpu.md" <<'EOF'
import re, subprocess, sys, datetime
B, S, tbuild, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3]), sys.argv[5]
N, L, C, T = 124_439_808, 12, 768, 1024
fpt = 6 * N + 6 * L * C * T
peak = {m[1]: float(m[2]) * 1e12 for m in re.finditer(r"peak (\w+) ([\d.]+)", open("peak.txt").read())}
def torch_run(m):
    t = open("torch-%s.txt" % m).read()
    losses = [float(x) for x in re.findall(r"^step \d+ loss ([\d.]+)", t, re.M)]
    return float(re.search(r"tokens/s ([\d.]+)", t)[1]), losses
def pipec_run(f):
    p = open(f).read()
    l = [float(x) for x in re.findall(r"^step\s+\d+/\d+ \| loss ([\d.]+)", p, re.M)]
    t = sorted(float(x) for x in re.findall(r"\| (\d+) tok/s", p, re.M)[3:])
    return t[len(t) // 2], l
ptok, pl = pipec_run("pipec.txt")
btok, bl = pipec_run("pipec-bf16.txt")
rows = [("pipec fp32", ptok, pl, peak["float32"]), ("pipec bf16 GEMMs", btok, bl, peak["bfloat16"])]
for m, prec in (("eager", "float32"), ("compile", "float32"), ("eager-bf16", "bfloat16"), ("compile-bf16", "bfloat16")):
    tok, l = torch_run(m)
    rows.append(("PyTorch %s" % m, tok, l, peak[prec]))
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
except OSError:
    gpu = "GPU (no nvidia-smi)"
commit = subprocess.run(["git", "-C", out.rsplit("/", 1)[0], "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(out, "a") as f:
    f.write("\n## GPT-2 124M, one GPU, T = 1024, batch %d, %d steps — %s, %s, commit %s\n\n" % (B, S, gpu, datetime.date.today(), commit))
    f.write("Command: `sh bench/gpu.sh build/pipec %d %d`. pipec compile time %.1f s. Peaks: fp32 %.1f, bf16 %.1f TFLOP/s (torch.matmul 8192^3).\n\n"
            % (B, S, tbuild, peak["float32"] / 1e12, peak["bfloat16"] / 1e12))
    f.write("| run | tokens/s | MFU (its precision's peak) | vs torch.compile fp32 | loss step 1 | loss step %d |\n|---|---|---|---|---|---|\n" % S)
    ref = rows[3][1]
    for name, tok, l, pk in rows:
        f.write("| %s | %.0f | %.1f%% | %.2fx | %.5f | %.5f |\n" % (name, tok, 100 * fpt * tok / pk, tok / ref, l[0], l[-1]))
    d = abs(pl[0] - rows[2][2][0])
    f.write("\nLoss parity (same weights and tokens, step 1): pipec %.6f, PyTorch eager %.6f, difference %.2e (%s 1e-3).\n"
            % (pl[0], rows[2][2][0], d, "within" if d <= 1e-3 else "NOT within"))
print(open(out).read())
sys.exit(0 if abs(pl[0] - rows[2][2][0]) <= 1e-3 else 1)
EOF
