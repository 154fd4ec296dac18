#!/bin/sh
# allreduce.sh BUILD_DIR [NP] [MiB] [REPS] — all-reduce of MiB (64) of float
# over NP (4) local ranks under mpirun, against memcpy measured in the same
# run; prints the markdown header and one row for shared memory and one for
# TCP only (PIPEC_COMM_SHM=0).
# The benchmark binary is built here from bench/allreduce.c against the
# build's libpipec_rt.a (like bench/block_bench.c, it is not a CMake target).
set -eu
build=${1:?usage: allreduce.sh BUILD_DIR [NP] [MiB] [REPS]}
np=${2:-4} mib=${3:-64} reps=${4:-10}
src=$(cd "$(dirname "$0")/.." && pwd)
bin=$build/bench_allreduce
cc -O2 -I"$src" -I"$build/gen" "$src/bench/allreduce.c" "$build/libpipec_rt.a" "$build/libpipec_front.a" \
  -fopenmp -lopenblas -lpthread -ldl -lrt -lm -o "$bin"
. "$src/tests/runtime/comm_port.sh"
echo "| ranks | MiB | transport | allreduce ms (median, best) | algbw GB/s | busbw GB/s | memcpy GB/s | busbw / memcpy | CPU ms per rank |"
echo "|---|---|---|---|---|---|---|---|---|"
for shm in 1 0; do
  mpirun --allow-run-as-root --oversubscribe -np "$np" -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$(comm_free_port)" \
    -x PIPEC_COMM_SHM=$shm "$bin" "$mib" "$reps"
done
