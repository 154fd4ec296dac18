#!/bin/sh
# check-time.sh [PIPEC] — wall time of `pipec --check` on each shipped GPT-2,
# the whole process (start, read, parse, check, exit), best and median of 50
# runs. Prints a markdown table.
set -eu
pipec=${1:-build/pipec}
runs=50
echo "| model | best ms | median ms |"
echo "|---|---|---|"
for m in models/gpt2.pipe models/gpt2-medium.pipe models/gpt2-xl.pipe; do
  times=""
  i=0
  while [ $i -lt $runs ]; do
    t0=$(date +%s%N)
    "$pipec" --check "$m" >/dev/null
    t1=$(date +%s%N)
    times="$times $(( (t1 - t0) / 1000 ))"
    i=$((i + 1))
  done
  echo "$times" | tr ' ' '\n' | grep . | sort -n | awk -v m="$m" '{a[NR]=$1} END {printf "| %s | %.2f | %.2f |\n", m, a[1]/1000, a[int((NR+1)/2)]/1000}'
done
