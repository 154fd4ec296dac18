#!/bin/sh
# comm_fail.sh COMM_RANKS MODE NP — one rank fails; every other rank must
# exit non-zero in time, its one "pipec: rank R: ..." line naming the
# failed rank. The ranks are started directly (torchrun-style variables,
# rank 0 serves the store), not by mpirun, which would kill the survivors
# itself once one rank dies.
#   kill      SIGKILL rank 2 in the middle of a loop of all-reduces and
#             send/recv (PIPEC_TIMEOUT=20: the hang-up must be seen at once)
#   kill-tcp  the same with PIPEC_COMM_SHM=0
#   kill-zc   the same with the vectors in shared memory (zero-copy all-reduces)
#   hang      SIGSTOP rank 2 (PIPEC_TIMEOUT=3: the others time out naming it)
#   abort     rank 1 calls prt_comm_abort
#   mismatch  rank 1 receives 200 bytes where rank 0 sent 100
#   term-init rank 3 stalls in init after its address record, while the
#             others hold their shared memory: SIGTERM rank 1, let ranks 0
#             and 2 time out (PIPEC_TIMEOUT=3); nothing may be left in /dev/shm
set -u
bin=$1 mode=$2 np=$3
here=$(dirname "$0")
. "$here/comm_port.sh"
tmp=$(mktemp -d)
export MASTER_ADDR=127.0.0.1 MASTER_PORT=$(comm_free_port) WORLD_SIZE=$np LOCAL_WORLD_SIZE=$np
unset TORCHELASTIC_RUN_ID TORCHELASTIC_USE_AGENT_STORE OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE PMI_RANK PMI_SIZE SLURM_PROCID SLURM_NTASKS
export PIPEC_COMM_SHM=1
victim=2 arg=loop limit=10 timeout=20 wait_victim=0
case $mode in
kill) ;;
kill-tcp) PIPEC_COMM_SHM=0 ;;
kill-zc) arg=loop-zc ;;
hang) timeout=3 limit=12 ;;
abort) victim=1 arg=abort wait_victim=1 ;;
mismatch) victim=1 arg=mismatch wait_victim=1 ;;
term-init) victim=3 arg=all timeout=3 limit=12 ;;
*) echo "comm_fail.sh: unknown mode $mode"; exit 2 ;;
esac
export PIPEC_TIMEOUT=$timeout
pids=""
r=0
while [ $r -lt "$np" ]; do
  a=$arg
  [ "$mode" = term-init ] && [ $r -eq "$victim" ] && a=stall-init
  # one host name for all, also for the stalled rank's record
  PIPEC_COMM_HOST=comm-fail-host RANK=$r LOCAL_RANK=$r "$bin" $a "$tmp" >"$tmp/out.$r" 2>"$tmp/err.$r" &
  eval "pid_$r=$!"
  pids="$pids $!"
  r=$((r + 1))
done
cleanup() {
  for p in $pids; do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
# a watchdog: nobody may outlive this
(i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; for p in $pids; do kill -9 "$p" 2>/dev/null; done) >/dev/null 2>&1 &
watchdog=$!

fail() {
  echo "FAIL ($mode): $*"
  r=0
  while [ $r -lt "$np" ]; do echo "--- rank $r stderr:"; cat "$tmp/err.$r"; r=$((r + 1)); done
  kill "$watchdog" 2>/dev/null
  exit 1
}

if [ "$arg" = loop ] || [ "$arg" = loop-zc ]; then
  # wait until every rank is in the loop
  n=0
  while :; do
    ready=$(ls "$tmp" | grep -c '^ready\.')
    [ "$ready" -eq "$np" ] && break
    n=$((n + 1))
    [ $n -gt 300 ] && fail "the ranks did not start their loop within 30 s"
    sleep 0.1
  done
  eval "vpid=\$pid_$victim"
  case $mode in
  hang) kill -STOP "$vpid" ;;
  *) kill -9 "$vpid" ;;
  esac
fi
if [ "$mode" = term-init ]; then
  # wait until ranks 0..2 have created their shared memory, then SIGTERM rank 1
  n=0
  while :; do
    have=0
    for p in $pid_0 $pid_1 $pid_2; do ls /dev/shm 2>/dev/null | grep -q "^pipec-$p-" && have=$((have + 1)); done
    [ $have -eq 3 ] && break
    n=$((n + 1))
    [ $n -gt 100 ] && fail "ranks 0..2 did not create shared memory within 10 s"
    sleep 0.1
  done
  kill -TERM "$pid_1"
fi
t0=$(date +%s.%N)
r=0
while [ $r -lt "$np" ]; do
  if [ $r -ne "$victim" ] || [ $wait_victim -eq 1 ]; then
    eval "p=\$pid_$r"
    wait "$p"
    rc=$?
    eval "rc_$r=$rc"
  fi
  r=$((r + 1))
done
t1=$(date +%s.%N)
kill "$watchdog" 2>/dev/null
elapsed=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}')
if [ "$mode" = term-init ]; then
  eval "kill -9 \$pid_$victim" 2>/dev/null
  for p in $pid_0 $pid_1 $pid_2; do
    ls /dev/shm 2>/dev/null | grep -q "^pipec-$p-" && fail "rank with pid $p left its shared memory in /dev/shm"
  done
  for r in 0 1 2; do
    eval "rc=\$rc_$r"
    [ "$rc" -ne 0 ] || fail "rank $r exited with status 0"
  done
  echo "PASS: term-init: no shared memory left after SIGTERM or timeout during init (statuses $rc_0 $rc_1 $rc_2, $elapsed s)"
  exit 0
fi
if [ "$mode" = hang ]; then
  # the stopped rank, once continued, finds its peers gone and exits too
  eval "vpid=\$pid_$victim"
  kill -CONT "$vpid" 2>/dev/null
  n=0
  while kill -0 "$vpid" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
  kill -9 "$vpid" 2>/dev/null
fi
r=0
while [ $r -lt "$np" ]; do
  if [ $r -eq "$victim" ] && [ $wait_victim -eq 0 ]; then r=$((r + 1)); continue; fi
  eval "rc=\$rc_$r"
  [ "$rc" -ne 0 ] || fail "rank $r exited with status 0"
  lines=$(grep -c '^pipec: rank ' "$tmp/err.$r")
  [ "$lines" -eq 1 ] || fail "rank $r printed $lines 'pipec: rank' lines, expected one"
  line=$(grep '^pipec: rank ' "$tmp/err.$r")
  if [ $r -eq "$victim" ]; then
    case $mode in
    mismatch) echo "$line" | grep -q "rank 0 sent 100 bytes with tag 5 but the matching recv on rank 1 expects 200 bytes" ||
      fail "rank 1 does not explain the mismatch: $line" ;;
    abort) echo "$line" | grep -q "^pipec: rank 1: comm_ranks: abort requested by the test" || fail "rank 1: $line" ;;
    esac
  else
    echo "$line" | grep -Eq "^pipec: rank $r: (lost rank $victim \(|timed out after $timeout s waiting for rank $victim during)" ||
      fail "rank $r does not name rank $victim: $line"
  fi
  echo "rank $r (status $rc): $line"
  r=$((r + 1))
done
awk -v e="$elapsed" -v l="$limit" 'BEGIN { exit !(e <= l) }' || fail "the ranks took $elapsed s to exit (limit $limit s)"
comm_check_shm || fail "shared memory left behind"
echo "PASS: $mode: every rank exited non-zero within $elapsed s naming rank $victim"
