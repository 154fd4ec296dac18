#!/bin/sh
# run-all.sh [-o FILE] [BUILD_DIR] — every benchmark in one go, written as one
# markdown file (default bench/RESULTS.md): the machine, the date, the commit
# and the load average before and after, then one section per benchmark with
# the command that produced each row. BUILD_DIR (default: the checkout's
# build) is configured and pipec built in it when needed; the benchmarks' own
# binaries and compiled models go to BUILD_DIR/bench-run (kept, with the log
# of every command). The part of the old file from the line "## Notes" on is
# hand-written and copied to the new file unchanged. Takes 1-3 minutes on 2
# cores; the first time longer (NVRTC compiles the CUDA kernels of the
# benchmark models once into the default kernel cache, ~40 s each).
# -q (quick, for the test): only the benchmarks that take seconds: the front
# end, schedules, sgemm, gpt2-tiny's training and generation.
set -eu
out='' quick=0 flags=''
while getopts o:q f; do
  case $f in
    o) out=$OPTARG ;;
    q) quick=1 flags="-q " ;;
    *) echo "usage: run-all.sh [-q] [-o FILE] [BUILD_DIR]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$src/build}
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
out=$(abs "${out:-$src/bench/RESULTS.md}") build=$(abs "$build")
cd "$src"
rel() { case $1 in "$src"/*) echo "${1#"$src"/}" ;; *) echo "$1" ;; esac; }
B=$(rel "$build") # the build folder as the commands show it
t_start=$(date +%s)
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)

# --- build
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DPIPEC_WERROR=ON >/dev/null
cmake --build "$build" -j 2 --target pipec >/dev/null
w=$build/bench-run
mkdir -p "$w"
log=$w/log.txt
: >"$log"
die() { echo "run-all.sh: $*; the last lines of $log:" >&2; tail -20 "$log" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PIPEC_TIMEOUT=120
. "$src/tests/runtime/comm_port.sh"
tmp=$out.tmp
trap 'rm -f "$tmp"' EXIT
exec 3>"$tmp"
say() { printf '%s\n' "$*" >&3; }
step() { echo "run-all.sh: $*" >&2; }

cores=$(nproc)
say "# Benchmark results"
say ""
say "Written by \`./bench/run-all.sh $flags$B\`; the part from \"Notes\" on is hand-written and kept by the script."
say ""
say "| | |"
say "|---|---|"
say "| machine | $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $cores cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory |"
say "| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r), $(cc --version | head -1), $(grep -m1 CMAKE_BUILD_TYPE:STRING= "$build/CMakeCache.txt" | sed 's/.*=//; s/^$/RelWithDebInfo (default)/') |"
say "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
# git describe --always --dirty, not counting the file this writes (a second run would be -dirty from the first)
commit=$(git describe --always) ex=''
case $out in "$src"/*) ex=":(exclude)$(rel "$out")" ;; esac
git diff --quiet HEAD -- . ${ex:+"$ex"} || commit=$commit-dirty
say "| commit | $commit |"
say "| load average before | $load_before |"
say "| load average after | @LOAD_AFTER@ |"
say "| wall time of the whole run | @WALL@ |"
say ""

# --- front end
step "pipec --check"
say "## pipec --check (front end, whole process)"
say ""
say "Command: \`./bench/check-time.sh $B/pipec\` — best and median of 50 runs. Target: under 50 ms for gpt2."
say ""
./bench/check-time.sh "$build/pipec" >&3 2>>"$log" || die "check-time.sh failed"
say ""

# --- schedule generation
step "schedule generation"
say "## Schedule generation (64 stages, 512 microbatches)"
say ""
say "Command: \`./bench/schedule-time.sh $B/pipec\` — the whole pipec process (parse, check, auto partition, build the schedule, lower it, validate it by simulation, write the CSV), best of 5. Target: under 1 s."
say ""
./bench/schedule-time.sh "$build/pipec" >&3 2>>"$log" || die "schedule-time.sh failed"
say ""

full() { [ "$quick" = 0 ]; }
# --- compile time
if full; then
step "compile time (cold, warm)"
say "## Compiling stage programs (pipec -o)"
say ""
say "Command: \`./bench/compile-time.sh $B/pipec\` — GPT-2 small on 4 pipeline stages (tp 1): CUDA kernels through NVRTC (sm_80, sm_90, compute_90 PTX) and the CPU stage programs through LLVM and the link; cold = empty NVRTC cache and output folder, warm = the same command again. Targets: under 20 s cold, under 2 s warm."
say ""
say "| case | time |"
say "|---|---|"
./bench/compile-time.sh "$build/pipec" >&3 2>>"$log" || die "compile-time.sh failed"
say ""
fi

# --- the BLAS
step "sgemm"
cc -O2 bench/sgemm.c -lopenblas -o "$w/sgemm" 2>>"$log" || die "bench/sgemm.c does not build"
{ "$w/sgemm" 512 50 >"$w/sgemm.txt" && "$w/sgemm" 1024 20 | grep '^sgemm' >>"$w/sgemm.txt"; } 2>>"$log" || die "sgemm failed"
say "## The BLAS: sgemm"
say ""
say "Command: \`cc -O2 bench/sgemm.c -lopenblas -o $B/bench-run/sgemm && $B/bench-run/sgemm 512 50 && $B/bench-run/sgemm 1024 20\` — cblas_sgemm of N x N x N floats, 1 thread and all $cores cores; $(sed -n 's/^blas //p' "$w/sgemm.txt")."
say ""
say "| N | threads | best GFLOP/s | median GFLOP/s |"
say "|---|---|---|---|"
awk '/^sgemm/ { printf "| %s | %s | %s | %s |\n", $2, $4, $5, $6 }' "$w/sgemm.txt" >&3
say ""
# the BLAS's rate on 1 core and on all: the best of either size (the medians move with the other work on the machine)
sg1=$(awk '$1 == "sgemm" && $4 == 1 && $5 > m { m = $5 } END { print m }' "$w/sgemm.txt")
sgall=$(awk -v n="$cores" '$1 == "sgemm" && $4 == n && $5 > m { m = $5 } END { print m }' "$w/sgemm.txt")
[ -n "$sgall" ] || sgall=$sg1

if full; then
step "one GPT-2 block"
cc -O3 -march=native -fopenmp -I. bench/block_bench.c lib/kernels_cpu.c -lopenblas -lm -o "$w/block_bench" 2>>"$log" || die "bench/block_bench.c does not build"
"$w/block_bench" 30 >"$w/block.txt" 2>>"$log" || die "block_bench failed"
say "## CPU: one GPT-2 block, forward + backward, against the BLAS"
say ""
say "Command: \`cc -O3 -march=native -fopenmp -I. bench/block_bench.c lib/kernels_cpu.c -lopenblas -lm -o $B/bench-run/block_bench && $B/bench-run/block_bench 30\` — the kernels of lib/kernels_cpu.c; sgemm measured in the same process on the block's 12 GEMM shapes. Target: block >= 50% of sgemm."
say ""
grep '^|' "$w/block.txt" >&3
say ""
say "Op $(sed -n 's/^ *\(breakdown.*\)/\1/p' "$w/block.txt")"
say ""
fi

# --- training and generation on the CPU
# variant NAME MODEL LAYOUT: MODEL compiled as is, or for 1 rank (LAYOUT r1: no split); says the command
variant() {
  m=$2
  if [ "$3" = r1 ]; then
    m=$w/$1.pipe
    sed -e 's/^parallel .*/parallel { tp = 1   pp = 1 }/' -e '/^split /d' "$2" >"$m"
    say "- \`sed -e 's/^parallel .*/parallel { tp = 1   pp = 1 }/' -e '/^split /d' $2 >$B/bench-run/$1.pipe && $B/pipec $B/bench-run/$1.pipe -o $B/bench-run/$1\`"
  else
    say "- \`$B/pipec $2 -o $B/bench-run/$1\`"
  fi
  "$build/pipec" "$m" -o "$w/$1" >"$w/$1.log" 2>&1 || { cat "$w/$1.log" >>"$log"; die "pipec $m failed"; }
}
mpi() { # NP THREADS DIR ARGS...: run the job
  np=$1 thr=$2 dir=$3
  shift 3
  MASTER_PORT=$(comm_free_port) PIPEC_THREADS=$thr timeout 300 mpirun -np "$np" --oversubscribe --bind-to none "$dir/launch" "$@"
}
step "compiling the CPU models"
say "## CPU training throughput"
say ""
say "The stage programs built as below, each run with \`OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 MASTER_PORT=<free port>\` and the command in its row (synthetic data):"
say ""
variant tiny-r1 models/gpt2-tiny.pipe r1
variant tiny-pp2tp2 models/gpt2-tiny.pipe pp2tp2
if full; then
  variant cpu-r1 bench/gpt2-cpu.pipe r1
  variant cpu-pp2tp2 bench/gpt2-cpu.pipe pp2tp2
fi
say ""
say "tokens/s: median (min – max) of the step lines after step 2. Achieved GFLOP/s = flops_per_token (6N + 6LCT, from the stage program's manifest) x tokens/s (median). \"run's peak\": the peak the stage programs measure at start, a 1024^3 sgemm through the kernels on all cores of each machine by its local rank 0 alone, summed over the machines (their MFU is achieved / this). \"sgemm\": bench/sgemm.c's rate just before, the best of 512^3 and 1024^3 (1 thread: $sg1, all $cores cores: $sgall GFLOP/s)."
say ""
say "| model | ranks (threads each) | tokens/step | tokens/s | GFLOP/token | achieved GFLOP/s | run's peak GFLOP/s | achieved / run's peak | achieved / sgemm 1 core | achieved / sgemm $cores cores | command |"
say "|---|---|---|---|---|---|---|---|---|---|---|"
train() { # NAME LABEL NP THREADS STEPS
  step "training $1 ($3 ranks x $4 threads)"
  f=$w/$1-t$4.train
  mpi "$3" "$4" "$w/$1" --steps "$5" --log-every 1 >"$f" 2>>"$log" || die "training $1 failed"
  fpt=$(strings "$w/$1"/*-stage0 | sed -n 's/^flops_per_token \([0-9.]*\)$/\1/p' | head -1)
  [ -n "$fpt" ] || die "no flops_per_token in the manifest of $w/$1"
  tps=$(awk -F'|' '/^step/ { split($1, a, "[ /]+"); if (a[2] + 0 >= 3) { split($6, b, " "); print b[1] } }' "$f" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)], v[1], v[NR] }')
  [ -n "$tps" ] || die "no step lines in $f"
  peak=$(sed -n 's/.*; peak \([0-9.]*\) GFLOP\/s.*/\1/p' "$f")
  per=$(sed -n 's/.* steps of \([0-9]*\) sequences x \([0-9]*\) tokens.*/\1 \2/p' "$f")
  echo "$tps $fpt $peak $per $sg1 $sgall" | awk -v m="$2" -v np="$3" -v t="$4" -v cmd="PIPEC_THREADS=$4 mpirun -np $3 --oversubscribe --bind-to none $B/bench-run/$1/launch --steps $5 --log-every 1" \
    '{ a = $4 * $1 / 1e9; printf "| %s | %d (%d) | %d | %.0f (%.0f – %.0f) | %.4g | %.1f | %.1f | %.2f | %.2f | %.2f | `%s` |\n", m, np, t, $6 * $7, $1, $2, $3, $4 / 1e9, a, $5, a / $5, a / $8, a / $9, cmd }' >&3
}
each_layout() { # FUNCTION N_TINY N_CPU: the function for every build and layout (steps or tokens: N)
  "$1" tiny-r1 "gpt2-tiny" 1 1 "$2"
  "$1" tiny-r1 "gpt2-tiny" 1 "$cores" "$2"
  "$1" tiny-pp2tp2 "gpt2-tiny, pp 2 x tp 2" 4 1 "$2"
  if full; then
    "$1" cpu-r1 "gpt2-cpu (dim 256, depth 4, vocab 50257)" 1 1 "$3"
    "$1" cpu-r1 "gpt2-cpu" 1 "$cores" "$3"
    "$1" cpu-pp2tp2 "gpt2-cpu, pp 2 x tp 2" 4 1 "$3"
  fi
}
each_layout train 30 8
say ""

say "## CPU generation throughput"
say ""
say "The same builds (initial weights: the seed's), greedy, prompt ids 1,2,3; tokens/s as the stage programs print it (the generated tokens over the decoding time, prompt included)."
say ""
say "| model | ranks (threads each) | tokens | seconds | tokens/s | command |"
say "|---|---|---|---|---|---|"
gen() { # NAME LABEL NP THREADS TOKENS
  step "generating with $1 ($3 ranks x $4 threads)"
  f=$w/$1-t$4.gen
  mpi "$3" "$4" "$w/$1" --generate --prompt-ids 1,2,3 --max-new-tokens "$5" --ids >"$f" 2>>"$log" || die "generation with $1 failed"
  r=$(sed -n 's/^pipec: \([0-9]*\) tokens in \([0-9.]*\) s (\([0-9.]*\) tokens\/s).*/\1 | \2 | \3/p' "$f")
  [ -n "$r" ] || die "no tokens/s line in $f"
  say "| $2 | $3 ($4) | $r | \`PIPEC_THREADS=$4 mpirun -np $3 --oversubscribe --bind-to none $B/bench-run/$1/launch --generate --prompt-ids 1,2,3 --max-new-tokens $5 --ids\` |"
}
each_layout gen 60 128
say ""

# --- host all-reduce
if full; then
step "all-reduce"
say "## Host all-reduce (runtime/comm.c) against memcpy"
say ""
say "Commands: \`sh bench/allreduce.sh $B 4 64 10\` (4 ranks), \`sh bench/allreduce.sh $B 2 64 10\` (2 ranks) — 64 MiB of float over local ranks under mpirun: shared memory zero-copy (the buffer from prt_comm_alloc_shared, as the stage programs' arena), shared memory staged through slots (PIPEC_COMM_ZC=0), and TCP only (PIPEC_COMM_SHM=0); memcpy of 64 MiB by one rank in the same run. busbw = algbw x 2(n-1)/n, as nccl-tests. Target: busbw >= 50% of memcpy with 4 ranks."
say ""
sh bench/allreduce.sh "$build" 4 64 10 >"$w/allreduce4.txt" 2>>"$log" || die "allreduce.sh 4 failed"
sh bench/allreduce.sh "$build" 2 64 10 >"$w/allreduce2.txt" 2>>"$log" || die "allreduce.sh 2 failed"
grep '^|' "$w/allreduce4.txt" >&3
grep '^| [0-9]' "$w/allreduce2.txt" >&3
say ""
fi

# --- the hand-written notes of the old file, then the figures only known at the end
if [ -f "$out" ] && grep -q '^## Notes' "$out"; then
  sed -n '/^## Notes/,$p' "$out" >&3
else
  say "## Notes"
  say ""
  say "(hand-written; bench/run-all.sh keeps everything from the heading above on)"
fi
exec 3>&-
wall=$(($(date +%s) - t_start))
sed -i -e "s/@LOAD_AFTER@/$(load)/" -e "s/@WALL@/$((wall / 60)) min $((wall % 60)) s/" "$tmp"
mv "$tmp" "$out"
step "wrote $out in ${wall} s"
