#!/bin/sh
# schedule-time.sh [PIPEC] — wall time of compiling the schedule for 64
# pipeline stages and 512 microbatches (build, lower, validate by
# simulation, write CSV), the whole pipec process, best of 5 runs, for each
# schedule. Prints a markdown table.
set -eu
pipec=${1:-build/pipec}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "| schedule | stages x microbatches | best ms |"
echo "|---|---|---|"
for sched in gpipe 1f1b zb1p interleaved zbv; do
  case $sched in interleaved|zbv) par="pp = 64   virtual = 2"; chunks=128 ;; *) par="pp = 64"; chunks=64 ;; esac
  cat > "$dir/m.pipe" <<PIPE
import "nn"
model big {
  vocab = 50257   context = 1024   dim = 768   heads = 12   depth = $chunks
  wte = embedding(vocab, dim)   wpe = embedding(context, dim)
  layers = [depth] transformer_block(dim, heads)
  ln_f = layernorm(dim)
  lm_head = linear(dim, vocab, bias = false, tie = wte)
  loss = cross_entropy()
}
partition = auto
parallel { $par }
train { batch = 512   microbatches = 512   schedule = $sched }
PIPE
  best=""
  for i in 1 2 3 4 5; do
    t0=$(date +%s%N)
    "$pipec" --schedule-csv "$dir/s.csv" "$dir/m.pipe"
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  echo "| $sched | $chunks x 512 | $best |"
done
