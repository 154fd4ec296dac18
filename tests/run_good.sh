#!/bin/sh
# run_good.sh PIPEC DIR — every DIR/*.pipe must check, and `pipec
# --dump-model` must print each of its `# expect: TEXT` lines (TEXT found as
# a substring of one output line). `# args: ...` adds command-line options.
pipec=$1 dir=$2
case $pipec in /*) ;; */*) pipec=$(pwd)/$pipec ;; esac
pass=0 fail=0
for f in "$dir"/*.pipe; do
  name=$(basename "$f" .pipe)
  args=$(sed -n 's/^# args: //p' "$f")
  out=$(cd "$dir" && "$pipec" --dump-model $args "$name.pipe" 2>&1)
  status=$?
  ok=1
  if [ $status -ne 0 ]; then
    echo "FAIL $name: exit status $status"; echo "$out"; ok=0
  else
    n=0
    while IFS= read -r want; do
      n=$((n + 1))
      if ! printf '%s\n' "$out" | grep -qF -- "$want"; then
        echo "FAIL $name: missing '$want'"; ok=0
      fi
    done <<EOT
$(sed -n 's/^# expect: //p' "$f")
EOT
    if [ "$n" -eq 0 ] || ! grep -q '^# expect: ' "$f"; then echo "FAIL $name: no '# expect:' lines"; ok=0; fi
    [ $ok -eq 1 ] || printf '%s\n' "$out"
  fi
  if [ $ok -eq 1 ]; then echo "ok $name"; pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
