#!/bin/sh
# comm_run.sh KIND LAUNCHER COMM_RANKS NP [TORCHRUN_PY]
# Runs `comm_ranks all` on NP ranks under a launcher and checks that every
# rank reports ok. KIND: mpirun (shared memory between local ranks),
# mpirun-tcp (PIPEC_COMM_SHM=0: TCP only), mpirun-2hosts (the ranks say
# they are on two hosts, PIPEC_COMM_HOST=h0 for the first half and h1 for
# the second: shared memory within each half, TCP between the halves),
# mpirun-zc (like mpirun, but every all-reduce looks for shared buffers,
# PIPEC_COMM_ZC_MIN=0: every rank must report
# zero-copy all-reduces and fallbacks to staging in its transport counters),
# torchrun (python3 TORCHRUN_PY).
set -u
kind=$1 launcher=$2 bin=$3 np=$4
here=$(dirname "$0")
. "$here/comm_port.sh"
port=$(comm_free_port)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
shm=1
case $kind in
mpirun-tcp) shm=0 ;;
esac
start=$(date +%s)
case $kind in
mpirun-2hosts)
  "$launcher" --allow-run-as-root --oversubscribe -np "$np" -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$port" \
    -x PIPEC_TIMEOUT=60 -x PIPEC_COMM_SHM=1 \
    sh -c 'PIPEC_COMM_HOST=h$((OMPI_COMM_WORLD_RANK * 2 / OMPI_COMM_WORLD_SIZE)) exec "$0" all' "$bin" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  ;;
mpirun-zc)
  "$launcher" --allow-run-as-root --oversubscribe -np "$np" -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$port" \
    -x PIPEC_TIMEOUT=60 -x PIPEC_COMM_SHM=1 -x PIPEC_COMM_ZC_MIN=0 -x PIPEC_COMM_STATS=1 \
    "$bin" all >"$tmp/out" 2>"$tmp/err"
  rc=$?
  ;;
mpirun*)
  "$launcher" --allow-run-as-root --oversubscribe -np "$np" -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT="$port" \
    -x PIPEC_TIMEOUT=60 -x PIPEC_COMM_SHM=$shm "$bin" all >"$tmp/out" 2>"$tmp/err"
  rc=$?
  ;;
torchrun)
  PIPEC_TIMEOUT=60 "$launcher" "$5" --standalone --nproc-per-node "$np" --no-python --master-port "$port" "$bin" all >"$tmp/out" 2>"$tmp/err"
  rc=$?
  ;;
*)
  echo "comm_run.sh: unknown kind $kind"
  exit 2
  ;;
esac
end=$(date +%s)
cat "$tmp/out"
ok=$(grep -c "^comm_ranks: rank [0-9]* of $np ok" "$tmp/out")
if [ "$rc" -ne 0 ] || [ "$ok" -ne "$np" ]; then
  echo "FAIL: $kind with $np ranks: exit status $rc, $ok of $np ranks ok"
  cat "$tmp/err"
  exit 1
fi
if [ "$kind" = mpirun-zc ]; then
  zc=$(grep -Ec "comm stats: .* [1-9][0-9]* zero-copy all-reduces, [1-9][0-9]* looked for shared buffers in vain" "$tmp/err")
  if [ "$zc" -ne "$np" ]; then
    echo "FAIL: $kind: $zc of $np ranks report both zero-copy all-reduces and fallbacks to staging"
    cat "$tmp/err"
    exit 1
  fi
fi
comm_check_shm || exit 1
echo "PASS: $kind, $np ranks, $((end - start)) s"
