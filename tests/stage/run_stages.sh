#!/bin/sh
# run_stages.sh PIPEC SRC OUT — the stage programs, as a user runs them.
#
#  1. gpt2-tiny (pp 2 x tp 2) compiles with -o and --emit llvm,obj,kernels:
#     every .ll passes llvm-as, and the kernels embedded in each stage object
#     (sections .pipec.kernels.*: the CUDA C of the stage's own kernels, its
#     cubins and PTX) are byte for byte the files --emit wrote.
#  2. Its launch program runs 4 ranks under mpirun to the end, the loss
#     falls, and rank 0's arena is the size pipec planned.
#  3. The same model in other layouts (1 rank; pp 2; tp 2; dp 2; pp 4 under
#     GPipe, 1F1B and ZB1P; interleaved 2 x 2 chunks; dp 2 x tp 2 x pp 2)
#     gives the same loss at every step as 1 rank (relative difference
#     <= 1e-5).
#     --load-schedule FILE -o DIR compiles the CSV's schedule (a 1f1b model
#     given GPipe's CSV trains exactly as the GPipe build); a wrong CSV is
#     refused.
#  4. A rebuild of an unchanged model rebuilds nothing; a change to the last
#     stage's modules rebuilds only that stage.
#  5. Launching with the wrong number of ranks stops with one line naming
#     both numbers.
set -u
pipec=$1 src=$2 out=$3
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out"
tiny=$src/models/gpt2-tiny.pipe
llvm_as=$(command -v llvm-as-14 || command -v llvm-as)
objcopy=$(command -v llvm-objcopy-14 || command -v llvm-objcopy || command -v objcopy)
launch() { # n dir [args]: run the job, the step lines on stdout
  n=$1 dir=$2; shift 2
  mpi_job 300 "$n" "$dir/launch" "$@" 2>"$dir.err"
}
losses() { grep '^step' | awk '{print $5}'; }

# 1. compile, with every intermediate file
b=$out/tiny
if "$pipec" "$tiny" -o "$b" --emit llvm,obj,kernels >"$b.log" 2>&1; then ok "gpt2-tiny compiles"; else bad "gpt2-tiny compiles"; cat "$b.log"; fi
for k in 0 1; do
  st=$b/gpt2_tiny-stage$k
  [ -x "$st" ] && ok "stage $k executable" || bad "stage $k executable"
  "$llvm_as" -o /dev/null "$st.ll" 2>"$out/as.err" && ok "stage $k IR passes llvm-as" || { bad "stage $k IR"; head -5 "$out/as.err"; }
  for f in "$st".kernels.*; do
    name=${f#"$st".}
    rm -f "$out/section"
    "$objcopy" --dump-section ".pipec.$name=$out/section" "$b/.pipec/gpt2_tiny-stage$k.o" /dev/null 2>/dev/null
    cmp -s "$f" "$out/section" && ok "stage $k embeds $name" || bad "stage $k: section .pipec.$name differs from $name"
  done
  # the kernel library the build compiled (when it had NVRTC), embedded as it is
  for f in "$(dirname "$pipec")"/kernel-library/library.*.cubin "$(dirname "$pipec")"/kernel-library/library.*.ptx; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    rm -f "$out/section"
    "$objcopy" --dump-section ".pipec.$name=$out/section" "$b/.pipec/gpt2_tiny-stage$k.o" /dev/null 2>/dev/null
    cmp -s "$f" "$out/section" && ok "stage $k embeds the build's $name" || bad "stage $k: section .pipec.$name differs from the build's $name"
  done
done

# 2. the launch line of the README, 4 ranks
launch 4 "$b" >"$b.run"
rc=$?
[ $rc -eq 0 ] && ok "4 ranks ran to the end" || { bad "4 ranks: status $rc"; tail -5 "$b.err"; }
first=$(losses <"$b.run" | head -1) last=$(losses <"$b.run" | tail -1)
awk -v a="$first" -v z="$last" 'BEGIN { exit !(a > 0 && z < a) }' && ok "loss falls ($first -> $last)" || bad "loss $first -> $last"
planned=$(sed -n 's/.*gpt2_tiny-stage0: .*memory \([0-9.]*\) MiB.*/\1/p' "$b.log")
ran=$(sed -n 's/.*rank 0 arena \([0-9]*\) bytes.*/\1/p' "$b.run")
awk -v p="$planned" -v r="$ran" 'BEGIN { exit !(r > 0 && sprintf("%.1f", r / 1048576) == p) }' &&
  ok "rank 0 allocates the planned arena ($ran bytes = $planned MiB)" || bad "arena $ran bytes, planned $planned MiB"
growth=$(sed -n 's/.*heap growth during steps 3..10: \([0-9]*\) bytes.*/\1/p' "$b.run")
[ -n "$growth" ] && [ "$growth" -lt 4096 ] && ok "steps allocate nothing in the arena's place (heap growth $growth bytes: the transport's queues)" ||
  bad "heap growth inside steps: '$growth' bytes"

# 3. layouts: the same losses as one rank
variant() { # name "parallel line" "split line" schedule
  sed -e "s/^parallel .*/$2/" -e "s/^split .*/$3/" -e "s/schedule = 1f1b/schedule = $4/" "$tiny" >"$out/$1.pipe"
}
variant r1 "parallel { tp = 1   pp = 1 }" "" 1f1b
variant pp2 "parallel { tp = 1   pp = 2 }" "split { layers.2: BEGINNING }" 1f1b
variant tp2 "parallel { tp = 2   pp = 1 }" "" 1f1b
variant dp2 "parallel { tp = 1   pp = 1   dp = 2 }" "" 1f1b
variant pp4-gpipe "parallel { tp = 1   pp = 4 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" gpipe
variant pp4-1f1b "parallel { tp = 1   pp = 4 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" 1f1b
variant pp4-zb1p "parallel { tp = 1   pp = 4 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" zb1p
variant interleaved "parallel { tp = 1   pp = 2   virtual = 2 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" interleaved
variant dp2-tp2-pp2 "parallel { tp = 2   pp = 2   dp = 2 }" "split { layers.2: BEGINNING }" 1f1b
for v in r1 pp2 tp2 dp2 pp4-gpipe pp4-1f1b pp4-zb1p interleaved dp2-tp2-pp2; do
  if ! "$pipec" "$out/$v.pipe" -o "$out/$v" >"$out/$v.log" 2>&1; then bad "$v compiles"; cat "$out/$v.log"; continue; fi
  n=$(sed -n 's/.*nproc-per-node \([0-9]*\).*/\1/p' "$out/$v.log")
  launch "$n" "$out/$v" | losses >"$out/$v.losses"
  [ "$(wc -l <"$out/$v.losses")" -eq 10 ] || { bad "$v: $(wc -l <"$out/$v.losses") steps of 10"; tail -3 "$out/$v.err"; continue; }
  [ "$v" = r1 ] && { ok "r1: 10 steps"; continue; }
  worst=$(paste "$out/r1.losses" "$out/$v.losses" | awk '{ d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > w) w = d } END { printf "%.2g", w }')
  awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }' && ok "$v ($n ranks): losses equal one rank's (worst relative difference $worst)" ||
    bad "$v: losses differ from one rank's by $worst"
done

# 3b. --load-schedule with -o: the stage programs run the CSV's schedule
"$pipec" "$out/pp4-gpipe.pipe" --schedule-csv "$out/gpipe.csv" >/dev/null 2>&1
if "$pipec" "$out/pp4-1f1b.pipe" -o "$out/csv" --load-schedule "$out/gpipe.csv" >"$out/csv.log" 2>&1 &&
  cmp -s "$out/csv/schedule.txt" "$out/pp4-gpipe/schedule.txt"; then
  ok "--load-schedule: a 1f1b model compiled with GPipe's CSV runs GPipe's schedule"
else
  bad "--load-schedule"; tail -3 "$out/csv.log"
fi
launch 4 "$out/csv" | losses >"$out/csv.losses"
cmp -s "$out/csv.losses" "$out/pp4-gpipe.losses" && ok "  and trains exactly as the GPipe build" || bad "--load-schedule losses differ from GPipe's"
printf '0F0,0F1\n' >"$out/bad.csv"
"$pipec" "$out/pp4-1f1b.pipe" -o "$out/csvbad" --load-schedule "$out/bad.csv" >"$out/csvbad.log" 2>&1 &&
  bad "a wrong CSV was accepted" || { grep -q "bad.csv" "$out/csvbad.log" && ok "a wrong CSV is refused, naming the file" || bad "wrong CSV: $(cat "$out/csvbad.log")"; }

# 4. rebuilds
"$pipec" "$tiny" -o "$b" --emit llvm,obj,kernels >"$b.log2" 2>&1
grep -q "0 of 2 stages rebuilt" "$b.log2" && ok "an unchanged model rebuilds nothing" || bad "unchanged: $(grep rebuilt "$b.log2")"
cp "$tiny" "$out/edit.pipe"
"$pipec" "$out/edit.pipe" -o "$out/edit" >/dev/null 2>&1
sed -i 's/ln_f    = layernorm(dim, eps = 1e-5)/ln_f    = layernorm(dim, eps = 1e-6)/' "$out/edit.pipe"
"$pipec" "$out/edit.pipe" -o "$out/edit" >"$out/tiny-eps.log" 2>&1
grep -q "1 of 2 stages rebuilt" "$out/tiny-eps.log" && grep -q "stage0: .*unchanged" "$out/tiny-eps.log" &&
  ok "a change to the last stage rebuilds only it" || bad "changed ln_f: $(grep -c unchanged "$out/tiny-eps.log") unchanged"

# 5. the wrong number of ranks
mpi_job 60 2 "$b/launch" >/dev/null 2>"$out/wrong.err"
rc=$?
[ $rc -ne 0 ] && grep -q "compiled for 4 ranks.*started 2" "$out/wrong.err" &&
  ok "2 ranks for a 4-rank build: one clear line" || { bad "wrong world: status $rc"; cat "$out/wrong.err"; }

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
