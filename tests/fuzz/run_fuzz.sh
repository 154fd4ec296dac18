#!/bin/sh
# run_fuzz.sh FUZZER SOURCE_DIR SECONDS — fuzz the front end from a seed
# corpus of every model, the standard library, and every bad and good test
# file. New inputs go to a scratch folder; a crash, leak or sanitizer report
# fails the test and leaves the input as crash-* in the build folder: turn it
# into a test in tests/bad or tests/good.
set -eu
fuzzer=$1 src=$2 secs=${PIPEC_FUZZ_SECONDS:-$3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/seeds"
i=0
for f in "$src"/models/*.pipe "$src"/models/examples/*.pipe "$src"/lib/*.pipe "$src"/tests/bad/*.pipe "$src"/tests/good/*.pipe; do
  [ -f "$f" ] || continue
  cp "$f" "$work/seeds/seed$i.pipe"
  i=$((i + 1))
done
echo "fuzzing the front end for ${secs}s from $i seed files"
"$fuzzer" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
  -dict="$src/tests/fuzz/pipe.dict" -print_final_stats=1 "$work/seeds"
