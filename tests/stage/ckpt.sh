#!/bin/sh
# ckpt.sh PIPEC SRC OUT PYTHON — checkpoints, initial weights and `pipec merge`
# on gpt2-tiny, as a user runs them (mpirun, 1 to 4 ranks).
#
#  1. Initial weights, exactly: a Hugging Face file (prefix "transformer.",
#     Conv1D [in, out], mask buffers, lm_head) loaded into pp 2 x tp 2 with a
#     learning rate too small to move any weight (sgd, lr 1e-30), saved
#     after one step and merged, gives back the file's own numbers; so do
#     the same weights as an llm.c checkpoint (padded vocab), and that pipec
#     checkpoint loaded into 1 rank.
#  2. Layouts: 10 steps from the same HF weights in 1 rank, pp 2, tp 2, dp 2,
#     pp 2 x tp 2, dp 2 x tp 2 x pp 2, pp 4 under GPipe, 1F1B and ZB1P,
#     interleaved (pp 2 x 2 chunks), and a heterogeneous 1-stage + 2-stage
#     pair (against 1 rank with its batch of 12): the merged final
#     checkpoints agree within 1e-5 and the losses within a relative 1e-5;
#     keep = 2 leaves the last two steps.
#     The first step's loss is the one GPT-2's forward pass (numpy, HF
#     layout, ckpt_files.py loss) gives for those weights: the mapping of
#     names and layouts is GPT-2's, not only self-consistent.
#  3. Resume: pp 2 x tp 2 stopped after step 6 (--stop-after 6, beside a
#     half-written step-8.tmp left by a crash), then --resume: steps 7-10
#     print the same loss, lr and norm as the run that never stopped, and the
#     step-10 files are byte for byte the same; the leftover is gone. Also a
#     run killed (SIGKILL) while saving every step resumes to the same
#     step-10 files; pp 2 x tp 2's step 6 resumed in 1 rank continues as
#     1 rank did (losses within 1e-5).
#  4. Refusals, each one clear line naming the file (and tensor), nothing
#     written: a truncated, a corrupt, a mixed-in and a missing checkpoint
#     file (resume and merge; the old merge output stays); HF files with the
#     wrong vocab, a missing tensor, a wrong dtype; a truncated llm.c file.
set -u
pipec=$1 src=$2 out=$3 py=$4
tool="$py $src/tests/stage/ckpt_files.py"
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 1
tiny=$src/models/gpt2-tiny.pipe
job() { # n dir args...: the job (1 rank: without a launcher), on a free port
  n=$1 d=$2; shift 2
  if [ "$n" -eq 1 ]; then MASTER_PORT=$(comm_free_port) timeout 120 "$d/launch" "$@"; else mpi_job 120 "$n" "$d/launch" "$@"; fi
}
run() { d=$2; job "$@" >"$d.run" 2>"$d.err"; } # stdout in DIR.run, stderr in DIR.err
steps() { grep '^step' "$1" | awk '{print $2, $5, $8, $11}'; } # step, loss, lr, norm
variant() { # name "parallel line" "split line" [sed expression]
  sed -e "s/^parallel .*/$2/" -e "s/^split .*/$3/" -e "${4:-s/^//}" "$tiny" >"$1.pipe"
  "$pipec" "$1.pipe" -o "$1" >"$1.log" 2>&1 || { bad "$1 compiles"; cat "$1.log"; }
}
sgd='s/optimizer   = adamw(.*)/optimizer = sgd(lr = 1e-30)/'
$tool hf init.safetensors && $tool llmc init.safetensors init.bin || bad "writing the weight files"

# 1. exact round trips
variant still "parallel { tp = 2   pp = 2 }" "split { layers.2: BEGINNING }" "$sgd"
variant still1 "parallel { tp = 1   pp = 1 }" "" "$sgd"
check_exact() { # what run-dir ckpt-dir
  "$pipec" merge "$3" -o "$3.safetensors" >/dev/null 2>"$3.merge.err" || { bad "$1: merge: $(cat "$3.merge.err")"; return; }
  r=$($tool compare init.safetensors "$3.safetensors" 0) && ok "$1: merged weights equal the HF file's exactly ($r)" || bad "$1: $r"
}
run 4 still --init init.safetensors --save ck-hf --stop-after 1 && check_exact "HF file into pp 2 x tp 2" still ck-hf ||
  bad "HF init: $(grep -v CUDA still.err | head -3)"
run 4 still --init init.bin --save ck-llmc --stop-after 1 && check_exact "llm.c file into pp 2 x tp 2" still ck-llmc ||
  bad "llm.c init: $(grep -v CUDA still.err | head -3)"
run 1 still1 --init ck-hf --save ck-dir --stop-after 1 && check_exact "pipec checkpoint of pp 2 x tp 2 into 1 rank" still1 ck-dir ||
  bad "pipec init: $(grep -v CUDA still1.err | head -3)"
grep -q "^pipec: initial weights from init.bin" still.run && ok "the run says where its weights came from" || bad "no 'initial weights' line"

# 2. layouts
variant r1 "parallel { tp = 1   pp = 1 }" "" 's/grad_clip/keep = 2   grad_clip/'
variant pp2 "parallel { tp = 1   pp = 2 }" "split { layers.2: BEGINNING }"
variant tp2 "parallel { tp = 2   pp = 1 }" ""
variant dp2 "parallel { tp = 1   pp = 1   dp = 2 }" ""
variant pp2tp2 "parallel { tp = 2   pp = 2 }" "split { layers.2: BEGINNING }"
variant dp2tp2pp2 "parallel { tp = 2   pp = 2   dp = 2 }" "split { layers.2: BEGINNING }"
pp4="split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }"
variant pp4gpipe "parallel { tp = 1   pp = 4 }" "$pp4" 's/schedule = 1f1b/schedule = gpipe/'
variant pp4-1f1b "parallel { tp = 1   pp = 4 }" "$pp4"
variant pp4zb1p "parallel { tp = 1   pp = 4 }" "$pp4" 's/schedule = 1f1b/schedule = zb1p/'
variant inter "parallel { tp = 1   pp = 2   virtual = 2 }" "$pp4" 's/schedule = 1f1b/schedule = interleaved/'
# the heterogeneous pair (a 1-stage and a 2-stage pipeline, batch 12 = 2 + 4 microbatches of 2) against 1 rank with batch 12
variant r1b12 "parallel { tp = 1   pp = 1 }" "" 's/  batch = 8   microbatches = 4/  batch = 12   microbatches = 6/'
variant pair "template one { microbatches = 2 }\ntemplate two { split { layers.2: BEGINNING }   microbatches = 4 }\nparallel { pipelines = [one, two] }" "" \
  's/  batch = 8   microbatches = 4/  batch = 12/'
for v in r1 pp2 tp2 dp2 pp2tp2 dp2tp2pp2 pp4gpipe pp4-1f1b pp4zb1p inter r1b12 pair; do
  n=$(sed -n 's/.*nproc-per-node \([0-9]*\).*/\1/p' "$v.log")
  run "$n" "$v" --init init.safetensors --save "ck-$v" --save-every 2 || { bad "$v: status $?: $(grep -v CUDA "$v.err" | head -3)"; continue; }
  steps "$v.run" >"$v.steps"
  "$pipec" merge "ck-$v" -o "$v.safetensors" >/dev/null 2>"$v.merge.err" || { bad "$v: merge: $(cat "$v.merge.err")"; continue; }
  [ "$v" = r1 ] || [ "$v" = r1b12 ] && continue
  base=r1
  [ "$v" = pair ] && base=r1b12
  r=$($tool compare $base.safetensors "$v.safetensors" 1e-5) && ok "$v ($n ranks): merged step 10 equals 1 rank's within 1e-5 ($r)" || bad "$v: $r"
  worst=$(paste $base.steps "$v.steps" | awk '{ d = ($2 - $6) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.2g", w }')
  [ "$(wc -l <"$v.steps")" -eq 10 ] && [ "$(wc -l <$base.steps)" -eq 10 ] && awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' && ok "$v: losses equal 1 rank's ($worst)" ||
    bad "$v: losses differ by $worst"
done
ref=$($tool loss init.safetensors)
first=$(head -1 r1.steps | cut -d' ' -f2)
awk -v a="$ref" -v b="$first" 'BEGIN { d = (a - b) / a; if (d < 0) d = -d; exit !(a > 0 && d <= 1e-5) }' &&
  ok "step 1's loss from the HF weights is GPT-2's as numpy computes it ($first vs $ref)" || bad "step 1 loss $first, GPT-2 in numpy $ref"
[ "$(ls ck-r1)" = "$(printf 'step-10\nstep-8')" ] && ok "keep = 2 keeps step-8 and step-10" || bad "keep = 2 left: $(ls ck-r1 | tr '\n' ' ')"
[ "$(ls ck-pp2tp2 | wc -l)" -eq 3 ] && ok "the default keep is 3" || bad "default keep: $(ls ck-pp2tp2 | tr '\n' ' ')"
[ "$(ls ck-pp2tp2/step-10 | tr '\n' ' ')" = "model-pp0-tp0.safetensors model-pp0-tp1.safetensors model-pp1-tp0.safetensors model-pp1-tp1.safetensors optim-pp0-tp0.safetensors optim-pp0-tp1.safetensors optim-pp1-tp0.safetensors optim-pp1-tp1.safetensors " ] &&
  ok "one model and one optimizer file per (pp, tp) rank" || bad "files: $(ls ck-pp2tp2/step-10 | tr '\n' ' ')"

# the train section's own settings (a path with spaces, kept whole)
variant keys "parallel { tp = 1   pp = 1 }" "" "s|precision = fp32|precision = fp32   save = \"my ckpt/run 1\" every 5   keep = 1   init = \"init.bin\"|"
run 1 keys || bad "train { save init keep }: status $?: $(grep -v CUDA keys.err | head -3)"
grep -q "^pipec: initial weights from init.bin" keys.run && [ "$(ls "my ckpt/run 1")" = step-10 ] &&
  ok "train { save = \"my ckpt/run 1\" every 5  keep = 1  init = ... } are obeyed" || bad "train keys: $(ls "my ckpt/run 1" | tr '\n' ' ')"
cmp -s "my ckpt/run 1/step-10/model-pp0-tp0.safetensors" ck-r1/step-10/model-pp0-tp0.safetensors &&
  ok "... and init.bin gives the run from init.safetensors, byte for byte" || bad "init from llm.c and HF differ after 10 steps"

# 3. resume
run 4 pp2tp2 --init init.safetensors --save ck-stop --save-every 2 --stop-after 6 || bad "stop after 6: status $?"
[ "$(steps pp2tp2.run | tail -1 | cut -d' ' -f1)" = 6/10 ] && [ -d ck-stop/step-6 ] && ok "--stop-after 6 ends after step 6, saved" ||
  bad "stop after 6: $(steps pp2tp2.run | tail -1)"
mkdir ck-stop/step-8.tmp && head -c 1000 ck-pp2tp2/step-8/model-pp0-tp0.safetensors >ck-stop/step-8.tmp/model-pp0-tp0.safetensors
run 4 pp2tp2 --save ck-stop --resume || bad "resume: status $?: $(grep -v CUDA pp2tp2.err | head -3)"
grep -q "resumed from ck-stop/step-6 (step 6 of 10)" pp2tp2.run && ok "resumes from step 6, not the half-written step 8" || bad "resume: $(head -2 pp2tp2.run)"
steps pp2tp2.run >resumed.steps
tail -4 pp2tp2.steps | cmp -s - resumed.steps && ok "steps 7-10 after resuming print what the uninterrupted run printed" ||
  { bad "resumed steps differ"; tail -4 pp2tp2.steps; cat resumed.steps; }
same=0
for f in ck-pp2tp2/step-10/*; do cmp -s "$f" "ck-stop/step-10/${f##*/}" && same=$((same + 1)); done
[ $same -eq 8 ] && ok "the resumed run's step-10 files equal the uninterrupted run's byte for byte" || bad "$same of 8 step-10 files equal"
[ ! -e ck-stop/step-8.tmp ] && ok "the leftover step-8.tmp is gone" || bad "step-8.tmp left"
# another layout: pp 2 x tp 2's step 6 resumed in 1 rank
run 1 r1 --resume ck-pp2tp2/step-6 || bad "1 rank from pp 2 x tp 2: status $?: $(grep -v CUDA r1.err | head -3)"
steps r1.run >r1-resumed.steps
worst=$(tail -4 r1.steps | paste - r1-resumed.steps | awk '{ d = ($2 - $6) / $2; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.2g", w }')
[ "$(wc -l <r1-resumed.steps)" -eq 4 ] && awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' &&
  ok "pp 2 x tp 2's step 6 resumed in 1 rank: steps 7-10 as 1 rank's ($worst)" || bad "cross-layout resume: $worst"
# a real crash: every rank SIGKILLed while saving every step
# (the SIGKILL goes to the whole process tree, timeout, mpirun and every rank, and the resume starts
# only when none of them is left to write into ck-kill)
descendants() { for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do echo "$p"; descendants "$p"; done; }
MASTER_PORT=$(comm_free_port) timeout 120 mpirun -np 4 --bind-to none pp2tp2/launch --init init.safetensors --save ck-kill --save-every 1 >kill.run 2>kill.err &
mpi=$!
i=0
while [ ! -d ck-kill/step-2 ] && [ $i -lt 3000 ]; do sleep 0.02; i=$((i + 1)); done
tree="$(descendants $mpi) $mpi"
kill -9 $tree 2>/dev/null
wait $mpi
i=0 alive=1
while [ $alive -eq 1 ] && [ $i -lt 500 ]; do
  alive=0
  for p in $tree; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive -eq 1 ] && sleep 0.02
  i=$((i + 1))
done
[ $alive -eq 0 ] || bad "processes of the killed job are still running"
killed=$(ls ck-kill | tr '\n' ' ')
if [ -d ck-kill/step-10 ]; then bad "the run ended before the SIGKILL ($killed)"; else
  run 4 pp2tp2 --save ck-kill --resume || bad "resume after SIGKILL: status $?: $(grep -v CUDA pp2tp2.err | head -3)"
  same=0
  for f in ck-pp2tp2/step-10/*; do cmp -s "$f" "ck-kill/step-10/${f##*/}" && same=$((same + 1)); done
  [ $same -eq 8 ] && ok "killed (SIGKILL, leaving $killed) and resumed: step-10 files equal byte for byte" || bad "after SIGKILL ($killed): $same of 8 equal"
fi

# 4. refusals
refuse() { # what expected-text command...: fails, one clear line containing the text
  what=$1 want=$2; shift 2
  "$@" >refuse.out 2>refuse.err
  rc=$?
  [ $rc -ne 0 ] && grep -q -- "$want" refuse.err && ok "$what: refused ($(grep -m1 -- "$want" refuse.err | sed 's/^.*pipec: //'))" ||
    { bad "$what: status $rc, wanted '$want'"; head -3 refuse.err; }
}
snapshot() { find "$1" -type f | sort | xargs md5sum; }
cp -r ck-pp2tp2 bad-trunc && truncate -s -100 bad-trunc/step-10/model-pp1-tp0.safetensors
cp r1.safetensors merged.safetensors
refuse "merge, truncated file" "model-pp1-tp0.safetensors" "$pipec" merge bad-trunc -o merged.safetensors
cmp -s r1.safetensors merged.safetensors && ok "a failed merge leaves its output file alone" || bad "merge output changed"
snapshot bad-trunc >before
refuse "resume, truncated file" "model-pp1-tp0.safetensors" job 1 r1 --resume bad-trunc
snapshot bad-trunc | cmp -s before - && ok "a refused resume writes nothing" || bad "the refused resume changed the checkpoint"
cp -r ck-pp2tp2 bad-byte && printf '\377' | dd of=bad-byte/step-10/optim-pp0-tp1.safetensors bs=1 seek=20 conv=notrunc 2>/dev/null
refuse "merge, corrupt header" "optim-pp0-tp1.safetensors" "$pipec" merge bad-byte -o merged.safetensors
refuse "resume, corrupt header" "optim-pp0-tp1.safetensors" job 1 r1 --resume bad-byte
cp -r ck-pp2tp2 bad-mix && cp ck-pp2tp2/step-8/model-pp0-tp1.safetensors bad-mix/step-10/
refuse "merge, a file of another step" "model-pp0-tp1.safetensors: metadata step is '8'" "$pipec" merge bad-mix -o merged.safetensors
cp -r ck-pp2tp2 bad-miss && rm bad-miss/step-10/model-pp1-tp1.safetensors
refuse "merge, a missing file" "model-pp1-tp1.safetensors is missing" "$pipec" merge bad-miss -o merged.safetensors
refuse "resume, a missing file" "model-pp1-tp1.safetensors is missing" job 1 r1 --resume bad-miss
cp -r ck-pp2tp2 bad-model && sed -i 's/"model":"gpt2_tiny"/"model":"gpt2_tinx"/' bad-model/step-10/*.safetensors
refuse "resume, another model's checkpoint" "is a checkpoint of model 'gpt2_tinx', not 'gpt2_tiny'" job 4 pp2tp2 --resume bad-model
$tool fake_ckpt fake fake.safetensors
refuse "init, a pipec checkpoint of another shape" "fake/step-3: tensor '.*' has shape" job 1 still1 --init fake --save ck-never
refuse "merge, an empty folder" "no complete checkpoint" "$pipec" merge "$(mkdir -p empty && echo empty)" -o merged.safetensors
cmp -s r1.safetensors merged.safetensors && ok "merged.safetensors is still the old file after every refusal" || bad "merge output changed"
$tool hf vocab500.safetensors --vocab 500
refuse "init, HF file of another vocab" "tensor 'transformer.wte.weight' has shape \[500, 64\], the model needs \[512, 64\]" job 1 still1 --init vocab500.safetensors --save ck-never
$tool hf drop.safetensors --drop h.3.ln_2.bias
refuse "init, HF file without a tensor" "tensor 'h.3.ln_2.bias' (pipec 'layers.3.ln_2.bias') is missing" job 4 still --init drop.safetensors --save ck-never
$tool hf i32.safetensors --i32 h.1.mlp.c_fc.weight --no-prefix
refuse "init, HF tensor of dtype I32" "tensor 'h.1.mlp.c_fc.weight' has dtype I32" job 1 still1 --init i32.safetensors --save ck-never
head -c 500000 init.safetensors >trunc.safetensors
refuse "init, truncated HF file" "trunc.safetensors" job 1 still1 --init trunc.safetensors --save ck-never
$tool llmc init.safetensors trunc.bin --truncate 4
refuse "init, truncated llm.c file" "trunc.bin: 965116 bytes, but its header" job 1 still1 --init trunc.bin --save ck-never
refuse "a save folder that cannot be written" "cannot write checkpoints into /proc/ckpt-test" job 1 still1 --save /proc/ckpt-test
grep -q '^step' refuse.out && bad "the unwritable save folder was found only after training" || ok "... found before step 1"
[ ! -e ck-never ] && ok "no refused init wrote a checkpoint" || bad "ck-never exists"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
