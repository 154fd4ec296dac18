#!/bin/sh
# bench_run_all.sh SRC BUILD WORK — bench/run-all.sh -q (the benchmarks that
# take seconds) into a results file that already has a hand-written Notes
# part, then checks what it wrote:
#  1. the header names this machine's cores, the checkout's commit, the load
#     averages; the Notes part is kept byte for byte;
#  2. every section of -q is there with its command;
#  3. training: three gpt2-tiny rows (1 rank x 1 and x all cores, pp 2 x tp 2),
#     512 tokens a step, GFLOP/token = 6N + 6LCT from `pipec --check`'s
#     parameter count, the median tokens/s inside its min – max, achieved =
#     GFLOP/token x tokens/s and each ratio column = achieved / its rate;
#  4. generation: three rows of 60 tokens at a positive rate;
#  5. a bad option stops with the usage line and leaves the file alone.
set -u
src=$1 build=$2 work=$3
. "$src/tests/stage/common.sh"
rm -rf "$work" && mkdir -p "$work"
r=$work/RESULTS.md
printf '# old tables, replaced\n\n## Notes\n\nHand-written: a `tick`, a | pipe |, a \\ backslash, & and $HOME.\n' >"$r"
sed -n '/^## Notes/,$p' "$r" >"$work/notes.want"
if sh "$src/bench/run-all.sh" -q -o "$r" "$build" >"$work/out" 2>&1; then ok "run-all.sh -q ran"; else bad "run-all.sh -q: status $?"; tail -20 "$work/out"; fi

# 1. header and notes
grep -q "^| machine | .*, $(nproc) cores, .* GiB memory |$" "$r" && ok "header: machine with $(nproc) cores" || bad "header: no machine line with $(nproc) cores"
c=$(git -C "$src" describe --always)
grep -q "^| commit | $c\(-dirty\)\? |$" "$r" && ok "header: commit $c" || bad "header: commit is not $c: $(grep '^| commit' "$r")"
[ "$(grep -c '^| load average \(before\|after\) | [0-9.]* [0-9.]* [0-9.]* |$' "$r")" = 2 ] && ok "header: load averages" || bad "header: load averages"
grep -q '@[A-Z_]*@' "$r" && bad "a placeholder is left: $(grep -o '@[A-Z_]*@' "$r" | head -1)" || ok "no placeholder left"
sed -n '/^## Notes/,$p' "$r" | cmp -s - "$work/notes.want" && ok "the Notes part is kept byte for byte" || bad "the Notes part changed"
grep -q '^# old tables' "$r" && bad "the old tables are still there" || ok "the old tables are replaced"

# 2. sections
for s in "pipec --check" "Schedule generation" "The BLAS: sgemm" "CPU training throughput" "CPU generation throughput"; do
  n=$(awk -v s="## $s" 'index($0, s) == 1 { on = 1; next } /^## / { on = 0 } on && /^\| [^-|]/ { k++ } END { print k + 0 }' "$r")
  [ "$n" -ge 3 ] && ok "section '$s': $n table lines" || bad "section '$s': $n table lines"
done
[ "$(grep -c '^Command: `' "$r")" -ge 3 ] && ok "sections name their commands" || bad "sections without their command"

# 3. training rows
params=$("$build/pipec" --check "$src/models/gpt2-tiny.pipe" | sed -n 's/.*, \([0-9]*\) parameters,.*/\1/p')
want=$(awk -v n="$params" 'BEGIN { print (6 * n + 6 * 4 * 64 * 64) / 1e9 }') # 6N + 6LCT: depth 4, dim 64, seq 64
sg=$(sed -n 's/.*(1 thread: \([0-9.]*\), all [0-9]* cores: \([0-9.]*\) GFLOP\/s).*/\1 \2/p' "$r")
grep '^| gpt2-tiny' "$r" | grep 'launch --steps' >"$work/train"
[ "$(wc -l <"$work/train")" = 3 ] && ok "3 training rows" || bad "$(wc -l <"$work/train") training rows, not 3"
# | model | ranks (threads) | tokens/step | med (min – max) | GFLOP/token | achieved | peak | a/peak | a/sg1 | a/sgall | cmd |
awk -F' [|] ' -v want="$want" -v sg="$sg" '
  function near(a, b, tol) { return a > 0 && b > 0 && (a - b <= tol * b) && (b - a <= tol * b) }
  function ratio(col, a, b) { return a > 0 && b > 0 && col - a / b <= 0.006 && a / b - col <= 0.006 } # printed %.2f
  { split(sg, s, " "); split($4, t, "[^0-9.]+"); med = t[1]; lo = t[2]; hi = t[3]
    e = ""
    if ($3 != 512) e = e " tokens/step " $3
    if (!near($5, want, 1e-3)) e = e " GFLOP/token " $5 " (6N+6LCT " want ")"
    if (!(lo <= med && med <= hi && lo > 0)) e = e " tokens/s " $4
    if (!near($6, $5 * med, 0.01)) e = e " achieved " $6 " vs " $5 " x " med
    if (!ratio($8, $6, $7)) e = e " achieved/peak " $8
    if (!ratio($9, $6, s[1])) e = e " achieved/sgemm1 " $9
    if (!ratio($10, $6, s[2])) e = e " achieved/sgemm " $10
    if (s[1] <= 0 || s[2] <= 0) e = e " sgemm rates " sg
    print (e == "" ? "ok" : "bad") " training row " NR ":" (e == "" ? " " $2 ", " med " tokens/s, " $6 " GFLOP/s" : e) }' "$work/train" >"$work/train.check"
while read -r v rest; do if [ "$v" = ok ]; then ok "$rest"; else bad "$rest"; fi; done <"$work/train.check"

# 4. generation rows
grep '^| gpt2-tiny' "$r" | grep 'launch --generate' | awk -F' [|] ' '{ print ($3 == 60 && $5 > 0 ? "ok" : "bad"), "generation row", NR ": " $3 " tokens at " $5 " tokens/s" }' >"$work/gen.check"
[ "$(wc -l <"$work/gen.check")" = 3 ] && ok "3 generation rows" || bad "$(wc -l <"$work/gen.check") generation rows, not 3"
while read -r v rest; do if [ "$v" = ok ]; then ok "$rest"; else bad "$rest"; fi; done <"$work/gen.check"

# 5. a bad option
cp "$r" "$work/before"
if sh "$src/bench/run-all.sh" -x -o "$r" "$build" >"$work/bad.out" 2>&1; then bad "-x accepted"; else
  grep -q '^usage: run-all.sh' "$work/bad.out" && cmp -s "$r" "$work/before" && ok "-x: usage, the file untouched" || bad "-x: $(cat "$work/bad.out")"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
