#!/bin/sh
# cli.sh PIPEC SRC — the command line behaves as users expect.
pipec=$1 src=$2
pass=0 fail=0
check() { # name, expected status, expected text in output, command...
  name=$1 want=$2 text=$3; shift 3
  out=$("$@" 2>&1); got=$?
  if [ "$got" -eq "$want" ] && printf '%s\n' "$out" | grep -qF -- "$text"; then
    echo "ok $name"; pass=$((pass + 1))
  else
    echo "FAIL $name: status $got (want $want), output:"; printf '%s\n' "$out"; fail=$((fail + 1))
  fi
}
cd "$src"
check help 0 "usage: pipec [options] FILE.pipe" "$pipec" --help
check help-short 0 "--check" "$pipec" -h
check version 0 "pipec 0." "$pipec" --version
check no-input 2 "pipec: no input file" "$pipec"
check unknown-option 2 "pipec: unknown option '--chek'" "$pipec" --chek models/gpt2.pipe
check two-inputs 2 "one input file at a time" "$pipec" --check models/gpt2.pipe models/gpt2-tiny.pipe
check option-needs-value 2 "option '--world-size' needs a value" "$pipec" models/gpt2.pipe --world-size
check bad-world-size 2 "--world-size needs a positive integer, not 'eight'" "$pipec" --world-size eight models/gpt2.pipe
check missing-file 1 "cannot open 'nope.pipe': No such file or directory" "$pipec" --check nope.pipe
check directory 1 "'models' is a directory" "$pipec" --check models
check check-ok 0 "models/gpt2.pipe: ok (model gpt2, 124439808 parameters, 6 ranks: dp 1 x tp 2 x pp 3" "$pipec" --check models/gpt2.pipe
check world-size-auto-dp 0 "12 ranks: dp 2 x tp 2 x pp 3" "$pipec" --check --world-size 12 models/gpt2.pipe
check world-size-equals 0 "12 ranks: dp 2 x tp 2 x pp 3" "$pipec" --check --world-size=12 models/gpt2.pipe
check world-size-mismatch 1 "world size 7 does not divide by tp x pp = 2 x 3 = 6" "$pipec" --check --world-size 7 models/gpt2.pipe
check medium-params 0 "354823168 parameters" "$pipec" --check models/gpt2-medium.pipe
check large-params 0 "774030080 parameters" "$pipec" --check models/gpt2-large.pipe
check xl-params 0 "1557611200 parameters" "$pipec" --check models/gpt2-xl.pipe
check tutorial-params 0 "43883280 parameters" "$pipec" --check models/pipelining-tutorial.pipe
check error-count 1 "pipec: 1 error in" "$pipec" --check --world-size 7 models/gpt2.pipe
check world-flag-vs-file 1 "world = 16 here, but --world-size 8 on the command line" "$pipec" --check --world-size 8 models/examples/libai-stage-ids.pipe
check nothing-asked 2 "nothing else was asked" "$pipec" models/gpt2.pipe
check emit-needs-o 2 "--emit keeps files of a compile: give -o DIR too" "$pipec" --emit llvm models/gpt2.pipe
check emit-bad 2 "--emit takes llvm, obj or kernels" "$pipec" --emit asm -o /tmp/x models/gpt2.pipe
check csv-b-before-f 1 "b-before-f.csv: error: invalid schedule: rank 0, step 1 (0B0): comes before 0F0, which it needs" \
  "$pipec" --load-schedule tests/csv/b-before-f.csv --dump-schedule models/gpt2-tiny.pipe
check csv-missing-receive 1 "invalid schedule: rank 1, step 5 (1F1): missing receive: 1RECV_F1 must come first" \
  "$pipec" --load-schedule tests/csv/missing-receive.csv --dump-schedule models/gpt2-tiny.pipe
check csv-cyclic-wait 1 "deadlock (cyclic wait): rank 0 at step 3 (0RECV_B0) waits for rank 1 at step 1 (1RECV_F1) waits for rank 0" \
  "$pipec" --load-schedule tests/csv/cyclic-wait.csv --dump-schedule models/gpt2-tiny.pipe
check csv-own-1f1b 0 "rank 0: 0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0F2" \
  "$pipec" --load-schedule tests/csv/own-1f1b.csv --dump-schedule models/gpt2-tiny.pipe
check csv-missing-file 1 "cannot read schedule 'nope.csv'" "$pipec" --load-schedule nope.csv --dump-schedule models/gpt2-tiny.pipe
tmp=$(mktemp -d)
"$pipec" --schedule-csv "$tmp/zbv.csv" --dump-schedule tests/schedule/zbv.pipe > "$tmp/generated.txt"
"$pipec" --load-schedule "$tmp/zbv.csv" --dump-schedule tests/schedule/zbv.pipe | sed 's/schedule from CSV/with the cost model/' > "$tmp/loaded.txt"
check csv-round-trip 0 "" cmp "$tmp/generated.txt" "$tmp/loaded.txt"
check svg 0 "" "$pipec" --schedule-svg "$tmp/s.svg" models/gpt2.pipe
check svg-content 0 'xmlns="http://www.w3.org/2000/svg"' cat "$tmp/s.svg"
check plan-json 0 "" "$pipec" --plan-json "$tmp/plan.json" models/gpt2.pipe
check plan-json-content 0 '"world": 6' cat "$tmp/plan.json"
rm -rf "$tmp"
# the op graph traces the forward and must find exactly the parameters the front end declared
for m in gpt2 gpt2-medium gpt2-large gpt2-xl pipelining-tutorial examples/llama-tiny; do
  n=$("$pipec" --check models/$m.pipe | sed -n 's/.*, \([0-9]*\) parameters.*/\1/p')
  check "ops-params-$m" 0 "($n values)" "$pipec" --dump-ops models/$m.pipe
done
check memory-plan 0 "288.39 MiB x 4" "$pipec" --memory tests/schedule/1f1b.pipe
check device-memory 1 "pipeline rank 3 needs 6.86 GiB" "$pipec" --check --device-memory 4GiB tests/schedule/gpipe.pipe
check device-memory-fits 0 ": ok" "$pipec" --check --device-memory 8GiB tests/schedule/gpipe.pipe
check device-memory-bad 2 "--device-memory needs a size" "$pipec" --check --device-memory lots models/gpt2.pipe
check import-dir 0 ": ok" "$pipec" --check --import-dir tests/good tests/good/custom-block.pipe
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
