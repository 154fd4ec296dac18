#!/bin/sh
# compile-time.sh PIPEC — `pipec models/gpt2.pipe -o DIR` for GPT-2 small on
# 4 pipeline stages (CUDA kernels through NVRTC for sm_80, sm_90 and PTX, and
# the CPU stage programs through LLVM), cold (empty NVRTC cache and output
# folder) and warm (the same command again: nothing changed). Prints one
# markdown row per case.
set -eu
pipec=${1:-build/pipec}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -e 's/^split .*/split { layers.3: BEGINNING  layers.6: BEGINNING  layers.9: BEGINNING }/' \
    -e 's/^parallel .*/parallel { tp = 1   pp = 4   dp = auto }/' "$(dirname "$0")/../models/gpt2.pipe" >"$work/gpt2-pp4.pipe"
export PIPEC_CACHE_DIR="$work/cache"
t() { s=$(date +%s%N); "$pipec" "$work/gpt2-pp4.pipe" -o "$work/out" >"$work/log" 2>&1; e=$(date +%s%N); awk -v a="$s" -v b="$e" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }
cold=$(t)
warm=$(t)
echo "| gpt2, pp 4, cold (empty NVRTC cache, empty output) | $cold s |"
echo "| gpt2, pp 4, warm (unchanged: $(sed -n 's/.*; \([0-9]* of [0-9]* stages\) rebuilt.*/\1/p' "$work/log") rebuilt) | $warm s |"
