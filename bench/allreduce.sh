#!/bin/sh
# allreduce.sh BUILD_DIR [NP] [MiB] [REPS] [RUNS] [MODES] — all-reduce of MiB
# (64) of float over NP (4) local ranks under mpirun, against memcpy
# measured in the same run; prints the markdown header and, RUNS (1) times
# over, one row per mode of MODES ("zc staged tcp"): zc: the buffer from
# prt_comm_alloc_shared, zero-copy; staged: the same buffer staged through
# the shared slots (PIPEC_COMM_ZC=0); tcp: TCP only (PIPEC_COMM_SHM=0).
# The benchmark binary is built here from bench/allreduce.c against the
# build's libpipec_rt.a (like bench/block_bench.c, it is not a CMake target).
set -eu
build=${1:?usage: allreduce.sh BUILD_DIR [NP] [MiB] [REPS]}
np=${2:-4} mib=${3:-64} reps=${4:-10} runs=${5:-1} modes=${6:-zc staged tcp}
src=$(cd "$(dirname "$0")/.." && pwd)
bin=$build/bench_allreduce
cc -O2 -I"$src" -I"$build/gen" "$src/bench/allreduce.c" "$build/libpipec_rt.a" "$build/libpipec_front.a" \
  -fopenmp -lopenblas -lpthread -ldl -lrt -lm -o "$bin"
. "$src/tests/runtime/comm_port.sh"
echo "| ranks | MiB | transport | allreduce ms (median, best) | algbw GB/s | busbw GB/s | memcpy GB/s | busbw / memcpy | CPU ms per rank |"
echo "|---|---|---|---|---|---|---|---|---|"
i=0
while [ $i -lt "$runs" ]; do
  for m in $modes; do
    case $m in
    zc) shm=1 zc=1 ;;
    staged) shm=1 zc=0 ;;
    tcp) shm=0 zc=1 ;;
    *) echo "allreduce.sh: unknown mode $m" >&2; exit 2 ;;
    esac
    mpirun --allow-run-as-root --oversubscribe -np "$np" -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$(comm_free_port)" \
      -x PIPEC_COMM_SHM=$shm -x PIPEC_COMM_ZC=$zc "$bin" "$mib" "$reps"
  done
  i=$((i + 1))
done
