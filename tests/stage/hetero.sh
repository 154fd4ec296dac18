#!/bin/sh
# hetero.sh PIPEC SRC OUT — heterogeneous pipeline templates as stage programs.
#
#  1. gpt2-tiny as an Oobleck-style pair (a 1-stage pipeline with 2
#     microbatches beside a 2-stage one with 4; batch 12, 2 rows each)
#     compiles to one program per pipeline and pipeline rank:
#     gpt2_tiny-p0-stage0, -p1-stage0, -p1-stage1 (no -stage<k>).
#  2. Each parameter's gradient group in the programs' manifests is what
#     --dump-plan prints: every module's dp group (ranks holding it in every
#     pipeline), and for the tied wte the union of its own and lm_head's.
#  3. Its 3 ranks train 10 steps with the same loss and gradient norm at every
#     step as 1 rank running batch 12 in 6 microbatches (relative difference
#     <= 1e-5).
#  4. A rebuild rebuilds nothing; launching 2 ranks stops with one line
#     naming both numbers; a program started on another pipeline's rank
#     stops with one line naming both.
set -u
pipec=$1 src=$2 out=$3
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out"
tiny=$src/models/gpt2-tiny.pipe
sed -e 's/^split .*//' -e 's/  batch = 8   microbatches = 4/  batch = 12/' \
    -e 's/^parallel .*/template one { microbatches = 2 }\ntemplate two { split { layers.2: BEGINNING }   microbatches = 4 }\nparallel { pipelines = [one, two] }/' \
    "$tiny" >"$out/pair.pipe"
sed -e 's/^split .*//' -e 's/^parallel .*/parallel { tp = 1   pp = 1 }/' -e 's/  batch = 8   microbatches = 4/  batch = 12   microbatches = 6/' \
    "$tiny" >"$out/r1.pipe"
grep -q "batch = 12 " "$out/pair.pipe" && grep -q "batch = 12   microbatches = 6" "$out/r1.pipe" || bad "the variants of gpt2-tiny.pipe (did its train line change?)"

# 1. compile
for v in pair r1; do
  "$pipec" "$out/$v.pipe" -o "$out/$v" >"$out/$v.log" 2>&1 && ok "$v compiles" || { bad "$v compiles"; cat "$out/$v.log"; }
done
for b in p0-stage0 p1-stage0 p1-stage1; do
  [ -x "$out/pair/gpt2_tiny-$b" ] && ok "pair: gpt2_tiny-$b" || bad "pair: no gpt2_tiny-$b"
done
[ ! -e "$out/pair/gpt2_tiny-stage0" ] && grep -q "3 of 3 stages rebuilt" "$out/pair.log" && ok "pair: three programs, nothing else" ||
  bad "pair: $(ls "$out/pair")"

# 2. the manifests' gradient groups, as world ranks, against --dump-plan
"$pipec" "$out/pair.pipe" --dump-plan >"$out/plan.txt" 2>&1
for b in p0-stage0 p1-stage0 p1-stage1; do strings "$out/pair/gpt2_tiny-$b"; done | awk '
  /^rank [0-9]+ pipeline [0-9]+ pp [0-9]+ tp 0$/ { rank[$4 "/" $6] = $2 }
  /^param [0-9]+ / { name[$2] = $3 }
  /^reduce [0-9]+ / { g = ""; for (i = 3; i <= NF; i++) g = g (i > 3 ? ", " : "") rank[$i]; grp[$2] = "[" g "]" }
  END { for (q in grp) { m = name[q]; sub(/\..*/, "", m); if (m == "layers") { split(name[q], s, "."); m = "layers." s[2] }; print m, grp[q] } }' |
  sort -u >"$out/groups.txt"
awk '/^dp groups per module:/ { on = 1; next } on && /^  / { print } /^tied groups:/ { print }' "$out/plan.txt" >"$out/plan-groups.txt"
# expected: module -> group from the plan's spans (modules in file order), wte joined with the tied group
exp=$(awk -v mods="wte wpe layers.0 layers.1 layers.2 layers.3 ln_f" '
  BEGIN { n = split(mods, M, " ") }
  /^tied groups:/ { t = $0; sub(/^tied groups: \[\[/, "", t); sub(/\]\]$/, "", t); next }
  { line = $0; sub(/^  /, "", line); split(line, h, ": "); g = h[2]; sub(/^\[/, "", g); sub(/\]$/, "", g)
    split(h[1], span, " \\.\\. "); lo = span[1]; hi = span[2] == "" ? lo : span[2]; on = 0
    for (i = 1; i <= n; i++) { if (M[i] == lo) on = 1; if (on) G[M[i]] = g; if (M[i] == hi) on = 0 } }
  END { split(substr(G["wte"], 2, length(G["wte"]) - 2), a, ", "); split(t, b, ", ")
        for (k in a) u[a[k]] = 1; for (k in b) u[b[k]] = 1; s = ""
        for (r = 0; r < 64; r++) if (r in u) s = s (s == "" ? "" : ", ") r
        G["wte"] = "[" s "]"; for (i = 1; i <= n; i++) print M[i], G[M[i]] }' "$out/plan-groups.txt" | sort -u)
if [ "$(cat "$out/groups.txt")" = "$exp" ] && grep -q "^wte \[0, 1, 2\]$" "$out/groups.txt"; then
  ok "gradient groups are the plan's ($(tr '\n' ';' <"$out/groups.txt"))"
else
  bad "gradient groups: programs $(tr '\n' ';' <"$out/groups.txt") plan $(echo "$exp" | tr '\n' ';')"
fi

# 3. the same training as one rank
launch() { mpi_job 300 "$1" "$out/$2/launch" 2>"$out/$2.err" | grep '^step' | awk '{print $5, $11}' >"$out/$2.steps"; }
launch 1 r1
launch 3 pair
if [ "$(wc -l <"$out/r1.steps")" -eq 10 ] && [ "$(wc -l <"$out/pair.steps")" -eq 10 ]; then
  worst=$(paste "$out/r1.steps" "$out/pair.steps" |
    awk '{ for (k = 1; k <= 2; k++) { d = ($k - $(k + 2)) / $k; if (d < 0) d = -d; if (d > w) w = d } } END { printf "%.2g", w }')
  awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' && ok "pair (3 ranks): losses and norms equal one rank's (worst relative difference $worst)" ||
    bad "pair: losses/norms differ from one rank's by $worst"
  first=$(head -1 "$out/pair.steps" | cut -d' ' -f1) last=$(tail -1 "$out/pair.steps" | cut -d' ' -f1)
  awk -v a="$first" -v z="$last" 'BEGIN { exit !(a > 0 && z < a) }' && ok "loss falls ($first -> $last)" || bad "loss $first -> $last"
else
  bad "steps: r1 $(wc -l <"$out/r1.steps"), pair $(wc -l <"$out/pair.steps") of 10"
  tail -n 3 "$out/r1.err" "$out/pair.err"
fi

# 4. rebuild; the wrong number of ranks
"$pipec" "$out/pair.pipe" -o "$out/pair" >"$out/pair.log2" 2>&1
grep -q "0 of 3 stages rebuilt" "$out/pair.log2" && ok "an unchanged pair rebuilds nothing" || bad "rebuild: $(grep rebuilt "$out/pair.log2")"
mpi_job 60 2 "$out/pair/launch" >/dev/null 2>"$out/wrong.err"
rc=$?
[ $rc -ne 0 ] && grep -q "compiled for 3 ranks.*started 2" "$out/wrong.err" &&
  ok "2 ranks for the 3-rank pair: one clear line" || { bad "wrong world: status $rc"; cat "$out/wrong.err"; }

mpi_job 60 3 "$out/pair/gpt2_tiny-p1-stage1" >/dev/null 2>"$out/wrong-bin.err"
grep -q "rank 0 runs pipeline 0 rank 0, but this is the program of pipeline 1 rank 1" "$out/wrong-bin.err" &&
  ok "pipeline 1's program started on pipeline 0's rank: one clear line" || { bad "wrong program"; cat "$out/wrong-bin.err"; }

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
