#!/bin/sh
# gpu_emu.sh PIPEC SRC OUT EMU_DIR — the stage programs' GPU path without a
# GPU: EMU_DIR holds libcuda.so.1 (tests/gpu/emulator: the kernels of
# kernels/*.cuh run on the CPU, one fiber per CUDA thread), a cuBLASLt that
# computes its GEMMs on the host and a fake NCCL (ranks talk through files;
# EMU_DEVICES=N gives N devices, so a job of N ranks uses it). With it on
# LD_LIBRARY_PATH the same stage binaries run their device code: device
# arena, every kernel through cuLaunchKernel, GEMMs through cuBLASLt,
# AdamW and clipping on the device, checkpoints through the host mirror.
# Checks, against the same binaries on the CPU (PIPEC_DEVICE=cpu):
#  - 1 rank: every step's loss and gradient norm within 1e-4 (relative), and
#    the validation loss;
#  - 2 ranks (pp 2) sharing the one emulated GPU: the host transport, the
#    same losses; and the line saying so; 4 ranks (pp 2 x tp 2) and dp 2
#    likewise, and pp 2 x tp 2 generation (vocabulary-parallel logits);
#  - precision bf16 (GEMMs on bf16 tensor cores) stays within 1e-3 of fp32;
#  - generation (greedy, beam search, top-k) gives the CPU's tokens;
#  - one emulated GPU per rank (EMU_DEVICES): pp 2 (1F1B and ZB1P), pp 2 x
#    tp 2 and dp 2 through NCCL (the fake's multi-process communicators:
#    all-reduces, rendezvous sends in groups) give the CPU's losses, and
#    generation its tokens;
#  - a failing kernel launch stops with one line naming the call, the stage,
#    the .pipe module and the kernel;
#  - a job where one rank has no GPU runs on the CPU and says so;
#  - a stream that never finishes ends the rank after PIPEC_TIMEOUT, and a
#    rank waiting on its GPU when its peer is killed ends naming it;
#  - a checkpoint written from the GPU resumes on the CPU with the losses of
#    an uninterrupted CPU run.
#
# With EMU_DIR "system" the same checks run on the machine's own driver and
# GPU (test stage-gpu, label cuda; exit 77, skipped, without a GPU), with a
# tolerance of 1e-3 (a GPU's sums run in another order than the CPU's, and
# the embedding gradients use atomics) and without the injected failure.
set -u
pipec=$1 src=$2 out=$3 emu=$4
. "$src/tests/stage/common.sh"
tol=1e-4 libs=$emu
export EMU_DEVICES=1 # emulated GPUs per machine (ranks share the one GPU unless a check sets more)
[ "$emu" = system ] && tol=1e-3 libs=${LD_LIBRARY_PATH:-} && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} # one GPU: 2 ranks share it
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 1
# a small gpt2 (the emulator is slow): 2 layers, 32 channels, 2 heads, 16 positions
model() { # NAME PP
  sed -e 's/context = 64   dim = 64   heads = 4   depth = 4/context = 16   dim = 32   heads = 2   depth = 2/' \
      -e "s/layers.2: BEGINNING/layers.1: BEGINNING/" -e "s/tp = 2   pp = 2/tp = 1   pp = $2/" -e "$3" \
      -e 's/batch = 8   microbatches = 4   seq = 64/batch = 4   microbatches = 2   seq = 16/' \
      -e 's/steps = 10/steps = 4/' -e 's/vocab = 512/vocab = 128/' -e 's/sampling = greedy/sampling = beam(2)/' \
      "$src/models/gpt2-tiny.pipe" >"$1.pipe"
  "$pipec" "$1.pipe" -o "$1" >"$1.build" 2>&1 || { bad "$1 compiles"; cat "$1.build"; }
}
model one 1 '/^split/d'
model two 2 's/^$//'
grep -q "tp = 1   pp = 2" two.pipe && grep -q "depth = 2" two.pipe || bad "the test model's settings did not apply"
python3 -c "
import struct, random
random.seed(5)
toks = [random.randrange(128) for _ in range(2000)]
open('data.bin', 'wb').write(struct.pack('<256i', 20240520, 1, len(toks), *([0] * 253)) + struct.pack('<%dH' % len(toks), *toks))
" || bad "writing a token file"

# run NAME DEVICE NP BUILD ARGS...: DEVICE cpu or emu
run() {
  name=$1 dev=$2 np=$3 b=$4
  shift 4
  if [ "$dev" = emu ]; then
    LD_LIBRARY_PATH="$libs" PIPEC_DEVICE=cuda mpi_job 600 "$np" -x LD_LIBRARY_PATH -x PIPEC_DEVICE -x EMU_DEVICES \
      "$b/launch" "$@" >"$name.out" 2>"$name.err"
  else
    PIPEC_DEVICE=cpu mpi_job 300 "$np" -x PIPEC_DEVICE "$b/launch" "$@" >"$name.out" 2>"$name.err"
  fi
  rc=$?
  [ $rc -eq 0 ] && ok "$name runs" || { bad "$name: status $rc"; tail -5 "$name.err"; }
}
# same NAME_A NAME_B: the step lines' loss and norm, and the validation losses, agree within $tol
same() {
  python3 - "$1.out" "$2.out" "$tol" <<'EOF'
import re, sys
def rows(p):
    r = []
    for l in open(p):
        m = re.match(r"step\s+(\d+)/\d+ \| loss ([\d.]+) \| lr \S+ \| norm ([\d.]+)", l)
        if m: r.append((int(m[1]), float(m[2]), float(m[3])))
        m = re.match(r"val\s+(\d+)/\d+ \| val loss ([\d.]+)", l)
        if m: r.append((-int(m[1]), float(m[2]), 0.0))
    return r
a, b = rows(sys.argv[1]), rows(sys.argv[2])
if not a or [x[0] for x in a] != [x[0] for x in b]:
    sys.exit("different steps: %s vs %s" % (a, b))
worst = max(max(abs(x[1] - y[1]) / max(abs(y[1]), 1e-6), abs(x[2] - y[2]) / max(abs(y[2]), 1e-6)) for x, y in zip(a, b))
print("%d rows, worst relative difference %.2e" % (len(a), worst))
sys.exit(0 if worst <= float(sys.argv[3]) else 1)
EOF
}

if [ "$emu" = system ] && ! MASTER_PORT=$(comm_free_port) PIPEC_DEVICE=cuda timeout 120 one/launch --steps 1 >probe.out 2>probe.err; then
  echo "no usable GPU: $(tail -1 probe.err)"
  exit 77
fi
run cpu1 cpu 1 one --data data.bin --val-data data.bin --val-every 2
run emu1 emu 1 one --data data.bin --val-data data.bin --val-every 2
r=$(same emu1 cpu1) && ok "1 rank on the GPU = the CPU ($r)" || bad "1 rank GPU vs CPU: $r"
grep -q "the stage programs run on the GPU, NCCL communicator of 1 rank" emu1.err && ok "it says it runs on the GPU, with NCCL" ||
  bad "no GPU line: $(head -3 emu1.err)"
grep -q "running on the CPU" cpu1.err && ok "PIPEC_DEVICE=cpu keeps it on the CPU" || bad "cpu: $(head -3 cpu1.err)"

# precision bf16 / tf32: the GEMMs round their inputs to bf16 / tf32 on the
# GPU (tensor cores), so the losses move a little from the CPU's fp32 ones,
# but not far (the training losses of the 1-rank CPU run)
for pr in bf16 tf32; do
  sed "s/precision = fp32/precision = $pr/" one.pipe >"one$pr.pipe"
  "$pipec" "one$pr.pipe" -o "one$pr" >"one$pr.build" 2>&1 && grep -q "precision = $pr" "one$pr.pipe" || bad "the $pr model compiles"
  run "emu$pr" emu 1 "one$pr" --data data.bin
  python3 - "emu$pr.out" cpu1.out <<'EOF' && ok "$pr GEMMs: within 1e-3 of fp32, and not equal to it" || bad "$pr on the GPU"
import re, sys
def rows(p):
    return [(float(m[1]), float(m[2])) for m in (re.match(r"step\s+\d+/\d+ \| loss ([\d.]+) \| lr \S+ \| norm ([\d.]+)", l) for l in open(p)) if m]
a, b = rows(sys.argv[1]), rows(sys.argv[2])
d = [abs(x[0] - y[0]) / y[0] for x, y in zip(a, b)]
print(d)
sys.exit(0 if len(a) == len(b) == 4 and max(d) <= 1e-3 and max(d) > 0 else 1)
EOF
  grep -q "precision $pr: GEMMs on the $pr tensor cores" "emu$pr.out" && ok "it says where $pr is used" || bad "$pr line: $(head -2 "emu$pr.out")"
done

# SGD with momentum (on the host, the vectors through the mirror) and its CPU twin
sed 's/optimizer   = adamw(lr = 1e-3, betas = (0.9, 0.95), eps = 1e-8, weight_decay = 0.1)/optimizer = sgd(lr = 0.1, momentum = 0.9)/' one.pipe >onesgd.pipe
"$pipec" onesgd.pipe -o onesgd >onesgd.build 2>&1 && grep -q "sgd(" onesgd.pipe || bad "the SGD model compiles"
run cpusgd cpu 1 onesgd --data data.bin
run emusgd emu 1 onesgd --data data.bin
r=$(same emusgd cpusgd) && ok "SGD on the GPU = the CPU ($r)" || bad "SGD GPU vs CPU: $r"

run cpu2 cpu 2 two --data data.bin
run emu2 emu 2 two --data data.bin
r=$(same emu2 cpu2) && ok "2 ranks sharing the GPU = the CPU ($r)" || bad "2 ranks GPU vs CPU: $r"
grep -q "through the host transport (ranks share a GPU" emu2.err && ok "the shared GPU goes through the host transport" ||
  bad "no host-transport line: $(head -3 emu2.err)"
[ "$(grep -c "run on the GPU" emu2.err)" -eq 1 ] && ok "one line for the job" || bad "GPU lines: $(grep -c "run on the GPU" emu2.err)"

# a failing launch: one line naming the call, the stage, the .pipe module and the kernel
[ "$emu" != system ] && MASTER_PORT=$(comm_free_port) LD_LIBRARY_PATH="$emu" EMU_CUDA_FAIL=pipec_layernorm_forward_f32:719 timeout 120 one/launch --data data.bin >fail.out 2>fail.err
rc=$?
[ "$emu" = system ] || { [ $rc -eq 1 ] && grep -q "^pipec: rank 0: CUDA error in cuLaunchKernel (gpt2_tiny stage 0 layers.0.ln_1: d_layernorm_forward: kernel pipec_layernorm_forward_f32, .*CUDA_ERROR_LAUNCH_FAILED" fail.err &&
  ok "a failed launch names the call, stage, module and kernel" || bad "failed launch: status $rc, $(tail -2 fail.err)"; }

# 4 ranks (pp 2 x tp 2: tensor-parallel all-reduces, the vocabulary-parallel loss and logits) and
# dp 2 (the gradient all-reduce), all sharing the one GPU, against the CPU and against 1 rank
sed 's/tp = 1   pp = 2/tp = 2   pp = 2/' two.pipe >four.pipe
"$pipec" four.pipe -o four >four.build 2>&1 && grep -q "tp = 2   pp = 2" four.pipe || bad "the pp 2 x tp 2 model compiles"
"$pipec" one.pipe --world-size 2 -o dp2 >dp2.build 2>&1 || bad "the dp 2 build"
run cpu4 cpu 4 four --data data.bin
run emu4 emu 4 four --data data.bin
r=$(same emu4 cpu4) && ok "pp 2 x tp 2 on the GPU = the CPU ($r)" || bad "pp 2 x tp 2 GPU vs CPU: $r"
run emudp2 emu 2 dp2 --data data.bin
r=$(same emudp2 cpu2) && ok "dp 2 on the GPU = pp 2 on the CPU ($r)" || bad "dp 2 GPU vs CPU: $r"
run gen-four-cpu cpu 4 four --generate --prompt-ids 5,17,30 --max-new-tokens 6 --ids --sampling top_k:5 --seed 9
run gen-four-emu emu 4 four --generate --prompt-ids 5,17,30 --max-new-tokens 6 --ids --sampling top_k:5 --seed 9
a=$(grep "generated ids" gen-four-cpu.out) e=$(grep "generated ids" gen-four-emu.out)
[ -n "$a" ] && [ "$a" = "$e" ] && ok "pp 2 x tp 2 generation: the GPU's tokens are the CPU's ($a)" || bad "pp 2 x tp 2 generation: cpu '$a', gpu '$e'"

# one emulated GPU per rank: NCCL for every all-reduce (tp, dp, the tied
# embedding's) and for the pipeline's sends and receives, one NCCL group per
# run of SEND/RECV (1F1B; ZB1P sends after I, then runs W), the dp
# all-reduce overlapped until the optimizer step; the fake NCCL's sends are
# rendezvous like NCCL's, so a wrong grouping would hang, not pass
if [ "$emu" != system ]; then
  sed 's/schedule = 1f1b/schedule = zb1p/' two.pipe >twozb.pipe
  "$pipec" twozb.pipe -o twozb >twozb.build 2>&1 && grep -q "schedule = zb1p" twozb.pipe || bad "the zb1p model compiles"
  EMU_DEVICES=2 run emu2n emu 2 two --data data.bin
  r=$(same emu2n cpu2) && ok "pp 2 on 2 GPUs (NCCL sends, tied all-reduce) = the CPU ($r)" || bad "pp 2 on 2 GPUs vs CPU: $r"
  grep -q "NCCL for all-reduces and the pipeline's sends and receives" emu2n.err && ok "it says the pipeline's sends go through NCCL" ||
    bad "no NCCL sends line: $(grep pipec emu2n.err | head -3)"
  run cpu2zb cpu 2 twozb --data data.bin
  EMU_DEVICES=2 run emu2zb emu 2 twozb --data data.bin
  r=$(same emu2zb cpu2zb) && ok "zb1p pp 2 on 2 GPUs = the CPU ($r)" || bad "zb1p pp 2 on 2 GPUs vs CPU: $r"
  EMU_DEVICES=4 run emu4n emu 4 four --data data.bin
  r=$(same emu4n cpu4) && ok "pp 2 x tp 2 on 4 GPUs (NCCL tp all-reduces and sends) = the CPU ($r)" || bad "pp 2 x tp 2 on 4 GPUs vs CPU: $r"
  EMU_DEVICES=2 run emudp2n emu 2 dp2 --data data.bin
  r=$(same emudp2n cpu2) && ok "dp 2 on 2 GPUs (NCCL gradient all-reduce) = the CPU ($r)" || bad "dp 2 on 2 GPUs vs CPU: $r"
  # a failing NCCL call names the call, the model, the stage and the message
  LD_LIBRARY_PATH="$libs" EMU_DEVICES=2 FAKE_NCCL_FAIL=ncclSend:5 PIPEC_DEVICE=cuda mpi_job 300 2 -x LD_LIBRARY_PATH -x EMU_DEVICES \
    -x FAKE_NCCL_FAIL -x PIPEC_DEVICE two/launch --data data.bin --steps 1 >ncclfail.out 2>ncclfail.err
  rc=$?
  [ $rc -ne 0 ] && grep -q "^pipec: rank 0: NCCL error in ncclSend (gpt2_tiny stage 0: pipeline send to pp rank 1, [0-9]* bytes): ncclInvalidUsage" ncclfail.err &&
    ok "a failing NCCL send names the call, stage and message" || bad "failing NCCL send: status $rc, $(grep pipec ncclfail.err | tail -2)"
  EMU_DEVICES=4 run gen-four-emun emu 4 four --generate --prompt-ids 5,17,30 --max-new-tokens 6 --ids --sampling top_k:5 --seed 9
  a=$(grep "generated ids" gen-four-cpu.out) e=$(grep "generated ids" gen-four-emun.out)
  [ -n "$a" ] && [ "$a" = "$e" ] && ok "pp 2 x tp 2 generation on 4 GPUs: the CPU's tokens" || bad "generation on 4 GPUs: cpu '$a', gpu '$e'"
fi

# one rank with a GPU, one without: all on the CPU, said once, the CPU's losses
if [ "$emu" != system ]; then
  MASTER_PORT=$(comm_free_port) timeout 300 mpirun --bind-to none -x MASTER_PORT -np 1 two/launch --data data.bin : \
    -np 1 -x LD_LIBRARY_PATH="$emu" two/launch --data data.bin >mixed.out 2>mixed.err
  rc=$?
  r=$(same mixed cpu2) && [ $rc -eq 0 ] && grep -q "^pipec: 1 of 2 ranks have a GPU; every rank runs on the CPU" mixed.err &&
    ok "a job where one rank has no GPU runs on the CPU and says so ($r)" || bad "mixed job: status $rc, $r, $(grep pipec mixed.err | head -3)"
fi

# waits on the GPU are bounded: a stream that never finishes ends the rank
# after PIPEC_TIMEOUT; a rank waiting on its GPU when a peer dies ends
# naming the lost rank (the ranks are started directly, torchrun-style:
# mpirun would kill the survivor itself)
if [ "$emu" != system ]; then
  MASTER_PORT=$(comm_free_port) LD_LIBRARY_PATH="$emu" EMU_STREAM_STUCK=1 PIPEC_TIMEOUT=2 timeout 60 one/launch --data data.bin >stuck.out 2>stuck.err
  rc=$?
  [ $rc -eq 1 ] && grep -q "^pipec: rank 0: the GPU did not finish .* within 2 s" stuck.err &&
    ok "a stuck GPU ends the rank after the timeout" || bad "stuck GPU: status $rc, $(tail -2 stuck.err)"
  (
    unset OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE PMI_RANK PMI_SIZE SLURM_PROCID SLURM_NTASKS TORCHELASTIC_RUN_ID
    export MASTER_ADDR=127.0.0.1 MASTER_PORT=$(comm_free_port) WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 PIPEC_TIMEOUT=60 LD_LIBRARY_PATH="$emu"
    RANK=0 LOCAL_RANK=0 two/launch --data data.bin --steps 1000 >lost0.out 2>lost0.err &
    p0=$!
    RANK=1 LOCAL_RANK=1 EMU_STREAM_STUCK=1 two/launch --data data.bin --steps 1000 >lost1.out 2>lost1.err &
    p1=$!
    # rank 1 is stuck in its first wait on the GPU (the parameters' upload) once rank 0 has printed its
    # start lines (after the peak measurement both wait for): then kill rank 0
    t=0
    while ! grep -q "^pipec: data" lost0.out 2>/dev/null && [ $t -lt 120 ]; do sleep 0.5; t=$((t + 1)); done
    sleep 1
    kill -9 $p0
    t=0
    while kill -0 $p1 2>/dev/null && [ $t -lt 40 ]; do sleep 1; t=$((t + 1)); done
    if kill -0 $p1 2>/dev/null; then kill -9 $p1; echo "still running after 40 s" >>lost1.err; fi
    wait $p1
    echo $? >lost1.rc
    wait $p0 2>/dev/null
  )
  rc=$(cat lost1.rc)
  [ "$rc" -ne 0 ] && grep -q "^pipec: rank 1: lost rank 0 (connection closed) during a wait on the GPU" lost1.err && ! grep -q "still running" lost1.err &&
    ok "a rank waiting on its GPU when its peer dies ends, naming it (status $rc)" || bad "lost peer: status $rc, $(tail -3 lost1.err)"
fi

# generation on the GPU: the same tokens as on the CPU (greedy, beam search, top-k with a seed)
for b in one two; do
  np=1
  [ $b = two ] && np=2
  for smp in greedy beam:2 top_k:5; do
    run "gen-$b-$smp-cpu" cpu $np $b --generate --prompt-ids 5,17,30 --max-new-tokens 8 --ids --sampling $smp --seed 3
    run "gen-$b-$smp-emu" emu $np $b --generate --prompt-ids 5,17,30 --max-new-tokens 8 --ids --sampling $smp --seed 3
    a=$(grep "generated ids" "gen-$b-$smp-cpu.out") e=$(grep "generated ids" "gen-$b-$smp-emu.out")
    [ -n "$a" ] && [ "$a" = "$e" ] && grep -q "generate on the GPU" "gen-$b-$smp-emu.err" &&
      ok "$np rank(s), $smp: the GPU generates the CPU's tokens ($a)" || bad "generation $b $smp: cpu '$a', gpu '$e'"
  done
done

# a checkpoint from the GPU, resumed on the CPU
run emu-save emu 1 one --data data.bin --stop-after 2 --save ck
run cpu-resume cpu 1 one --data data.bin --resume ck
run cpu-full cpu 1 one --data data.bin
python3 - cpu-resume.out cpu-full.out "$tol" <<'EOF' && ok "a GPU checkpoint resumes on the CPU as an uninterrupted run" || bad "resume from the GPU checkpoint"
import re, sys
def steps(p):
    return {int(m[1]): float(m[2]) for m in (re.match(r"step\s+(\d+)/\d+ \| loss ([\d.]+)", l) for l in open(p)) if m}
a, b = steps(sys.argv[1]), steps(sys.argv[2])
print(a, b)
sys.exit(0 if a and min(a) == 3 and all(abs(a[s] - b[s]) <= float(sys.argv[3]) * b[s] for s in a) else 1)
EOF
# a model with no train section generates on the GPU too
python3 -c "
import re
open('inferonly.pipe', 'w').write(re.sub(r'train \{.*?\n\}\n', '', open('one.pipe').read(), flags=re.S))
"
"$pipec" inferonly.pipe -o inferonly >inferonly.build 2>&1 || bad "the inference-only model compiles"
run gen-io-cpu cpu 1 inferonly --prompt-ids 5,17,30 --max-new-tokens 6 --ids --sampling top_k:5 --seed 4
run gen-io-emu emu 1 inferonly --prompt-ids 5,17,30 --max-new-tokens 6 --ids --sampling top_k:5 --seed 4
a=$(grep "generated ids" gen-io-cpu.out) e=$(grep "generated ids" gen-io-emu.out)
[ -n "$a" ] && [ "$a" = "$e" ] && grep -q "generate on the GPU" gen-io-emu.err && ok "an inference-only model generates on the GPU ($a)" ||
  bad "inference-only: cpu '$a', gpu '$e', $(head -2 gen-io-emu.err)"

# beam search from the GPU checkpoint (its beams change places: the caches are reordered on the device)
run gen-ck-cpu cpu 1 one --generate --weights ck --prompt-ids 5,17,30,9,100 --max-new-tokens 10 --ids --sampling beam:2
run gen-ck-emu emu 1 one --generate --weights ck --prompt-ids 5,17,30,9,100 --max-new-tokens 10 --ids --sampling beam:2
a=$(grep "generated ids" gen-ck-cpu.out) e=$(grep "generated ids" gen-ck-emu.out)
[ -n "$a" ] && [ "$a" = "$e" ] && ok "beam search from the checkpoint: the GPU's tokens are the CPU's ($a)" || bad "beam from ck: cpu '$a', gpu '$e'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
