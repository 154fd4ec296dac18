#!/bin/sh
# run_golden.sh PIPEC DIR OPTION EXT — for every DIR/NAME.pipe, run
# `cd DIR && PIPEC OPTION NAME.pipe` (plus the words of a `# args: ...` line
# in the file, if any); it must exit 0 and print on stdout exactly the bytes
# of DIR/NAME.EXT. Prints `ok NAME` or `FAIL NAME: why` (a unified diff, and
# pipec's stderr, on a mismatch), then `N passed, M failed`; exits 1 when
# anything failed, 2 on a usage error.
#   sh tests/run_golden.sh build/pipec tests/plan --dump-plan txt
if [ $# -ne 4 ]; then
  echo "usage: sh run_golden.sh PIPEC DIR OPTION EXT" >&2
  exit 2
fi
pipec=$1 dir=$2 option=$3 ext=$4
case $pipec in /*) ;; */*) pipec=$(pwd)/$pipec ;; esac
if [ ! -d "$dir" ]; then
  echo "run_golden.sh: no directory '$dir'" >&2
  exit 2
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/golden.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 2' HUP INT TERM
pass=0 fail=0
for f in "$dir"/*.pipe; do
  if [ ! -e "$f" ]; then
    echo "FAIL: no .pipe files in $dir"
    fail=$((fail + 1))
    break
  fi
  name=$(basename "$f" .pipe)
  args=$(sed -n 's/^# args: //p' "$f")
  # $args is split into words on purpose
  (cd "$dir" && "$pipec" "$option" $args "$name.pipe") >"$tmp/out" 2>"$tmp/err"
  status=$?
  if [ $status -ne 0 ]; then
    echo "FAIL $name: exit status $status"
    cat "$tmp/err"
    fail=$((fail + 1))
  elif [ ! -f "$dir/$name.$ext" ]; then
    echo "FAIL $name: no expected output $dir/$name.$ext"
    fail=$((fail + 1))
  elif ! cmp -s "$dir/$name.$ext" "$tmp/out"; then
    echo "FAIL $name: output differs from $name.$ext"
    diff -u "$dir/$name.$ext" "$tmp/out" | sed "1,2s|$tmp/out|(pipec $option $name.pipe)|"
    cat "$tmp/err"
    fail=$((fail + 1))
  else
    echo "ok $name"
    pass=$((pass + 1))
  fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
