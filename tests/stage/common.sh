# common.sh — sourced by the multi-rank test scripts (tests/stage/*.sh,
# tests/runtime/data_run.sh): their checks' bookkeeping and the environment
# their jobs run in (mpirun as root, ranks beyond the cores, one kernel
# thread per rank, a bounded wait for lost ranks).
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export PIPEC_TIMEOUT=60 PIPEC_THREADS=1
. "$src/tests/runtime/comm_port.sh"
# mpi_job SECONDS NP PROGRAM [ARGS...]: one job under mpirun, on a store port
# that is free now (ctest -j runs multi-rank tests side by side)
mpi_job() {
  t=$1 np=$2
  shift 2
  MASTER_PORT=$(comm_free_port) timeout "$t" mpirun -np "$np" --bind-to none -x MASTER_PORT "$@"
}
