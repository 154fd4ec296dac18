#!/bin/sh
# run_bad.sh PIPEC DIR — the golden negative tests.
#
# For every DIR/NAME.pipe, runs `PIPEC --check NAME.pipe` from inside DIR (so
# the paths in the messages are just NAME.pipe) and requires exit status 1 and
# standard error byte-identical to DIR/NAME.err. A .pipe without a .err fails.
# Prints "ok NAME" or "FAIL NAME" per case (with a unified diff of the
# difference), then "N passed, M failed"; exits 1 if any case failed.
#
# To (re)generate one expected file after checking the message by eye:
#   cd tests/bad && ../../build/pipec --check NAME.pipe 2> NAME.err

if [ $# -ne 2 ]; then
  echo "usage: $0 PIPEC DIR" >&2
  exit 2
fi

pipec=$1
dir=$2
# The command runs inside DIR, so make a relative PIPEC path absolute; a
# bare name is looked up in PATH.
case $pipec in
  /*) ;;
  */*) pipec=$(cd "$(dirname "$pipec")" && pwd)/$(basename "$pipec") ;;
  *) pipec=$(command -v "$pipec") || pipec= ;;
esac
if [ -z "$pipec" ] || [ ! -x "$pipec" ]; then
  echo "$0: cannot run '$1'" >&2
  exit 2
fi
if [ ! -d "$dir" ]; then
  echo "$0: '$dir' is not a directory" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/run_bad.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

passed=0
failed=0
for path in "$dir"/*.pipe; do
  [ -e "$path" ] || continue
  file=$(basename "$path")
  name=${file%.pipe}
  why=
  if [ ! -f "$dir/$name.err" ]; then
    why="no expected output $name.err"
  else
    (cd "$dir" && "$pipec" --check "$file") >"$tmp/out" 2>"$tmp/err"
    status=$?
    if [ "$status" -ne 1 ]; then
      why="exit status $status, expected 1"
    fi
    if ! cmp -s "$dir/$name.err" "$tmp/err"; then
      why="${why:+$why; }stderr differs from $name.err"
    fi
  fi
  if [ -z "$why" ]; then
    echo "ok $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($why)"
    if [ -f "$dir/$name.err" ]; then
      diff -u "$dir/$name.err" "$tmp/err" |
        sed "1s|.*|--- $name.err (expected)|; 2s|.*|+++ $name.pipe stderr (actual)|"
      if [ -s "$tmp/out" ]; then
        echo "  stdout:"
        sed 's/^/  | /' "$tmp/out"
      fi
    fi
    failed=$((failed + 1))
  fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
