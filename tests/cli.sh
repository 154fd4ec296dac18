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
check compile-not-yet 2 "has no code generator yet" "$pipec" models/gpt2.pipe -o /tmp/pipec-cli-out
check import-dir 0 ": ok" "$pipec" --check --import-dir tests/good tests/good/custom-block.pipe
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
