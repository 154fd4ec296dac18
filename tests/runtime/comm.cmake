# The host transport (runtime/comm.c): comm_ranks runs on every rank of a
# real multi-process job and checks point-to-point messages and collectives
# bitwise against results it works out itself; the failure tests kill,
# stop or abort one rank and check that every other rank exits non-zero in
# time, naming it. Each launch picks its own free MASTER_PORT.
add_executable(comm_ranks tests/runtime/test_comm.c)
target_link_libraries(comm_ranks PRIVATE pipec_rt)

set(PIPEC_COMM_SH ${PIPEC_TESTS}/runtime)
set(PIPEC_COMM_TESTS)

find_program(MPIRUN mpirun)
if(MPIRUN)
  # 8 ranks on one host: shared memory between them, then TCP only
  add_test(NAME comm-mpirun-8 COMMAND sh ${PIPEC_COMM_SH}/comm_run.sh mpirun ${MPIRUN} $<TARGET_FILE:comm_ranks> 8)
  add_test(NAME comm-mpirun-8-tcp COMMAND sh ${PIPEC_COMM_SH}/comm_run.sh mpirun-tcp ${MPIRUN} $<TARGET_FILE:comm_ranks> 8)
  # as if on two hosts of 4: shared memory inside each, TCP between them
  add_test(NAME comm-mpirun-2x4 COMMAND sh ${PIPEC_COMM_SH}/comm_run.sh mpirun-2hosts ${MPIRUN} $<TARGET_FILE:comm_ranks> 8)
  # zero-copy all-reduces (buffers from prt_comm_alloc_shared), every all-reduce looking for shared buffers
  add_test(NAME comm-mpirun-4-zc COMMAND sh ${PIPEC_COMM_SH}/comm_run.sh mpirun-zc ${MPIRUN} $<TARGET_FILE:comm_ranks> 4)
  list(APPEND PIPEC_COMM_TESTS comm-mpirun-8 comm-mpirun-8-tcp comm-mpirun-2x4 comm-mpirun-4-zc)
endif()

# torchrun stand-in (its agent serves the store; the ranks are clients)
if(EXISTS ${PIPEC_TESTS}/launch/torchrun.py)
  find_program(PIPEC_PYTHON3 python3)
  if(PIPEC_PYTHON3)
    add_test(NAME comm-torchrun-4
             COMMAND sh ${PIPEC_COMM_SH}/comm_run.sh torchrun ${PIPEC_PYTHON3} $<TARGET_FILE:comm_ranks> 4 ${PIPEC_TESTS}/launch/torchrun.py)
    list(APPEND PIPEC_COMM_TESTS comm-torchrun-4)
  endif()
endif()

# failures: SIGKILL of rank 2, SIGSTOP of rank 2 (timeout), prt_comm_abort on rank 1, a size mismatch
add_test(NAME comm-kill COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> kill 4)
add_test(NAME comm-kill-zc COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> kill-zc 4)
add_test(NAME comm-kill-tcp COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> kill-tcp 4)
add_test(NAME comm-hang COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> hang 4)
add_test(NAME comm-abort COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> abort 4)
add_test(NAME comm-mismatch COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> mismatch 2)
# shared memory is not left behind when init is interrupted (SIGTERM) or times out
add_test(NAME comm-term-init COMMAND sh ${PIPEC_COMM_SH}/comm_fail.sh $<TARGET_FILE:comm_ranks> term-init 4)
list(APPEND PIPEC_COMM_TESTS comm-kill comm-kill-zc comm-kill-tcp comm-hang comm-abort comm-mismatch comm-term-init)

set_tests_properties(${PIPEC_COMM_TESTS} PROPERTIES LABELS runtime TIMEOUT 120)
