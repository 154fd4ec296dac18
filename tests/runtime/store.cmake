# The launcher environment (runtime/env.c) and the TCPStore client and
# server (runtime/store.c): in one process, against a Python client, and as
# 8 real ranks under our torchrun stand-in and under Open MPI's mpirun.
add_executable(test_store tests/runtime/test_store.c)
target_link_libraries(test_store PRIVATE pipec_rt)
add_test(NAME runtime-env COMMAND test_store env)
add_test(NAME store-local COMMAND test_store local)
set_tests_properties(runtime-env store-local PROPERTIES LABELS runtime TIMEOUT 120)

# each rank of a job: set its key, barrier, read every other rank's key
add_executable(store_ranks tests/runtime/store_ranks.c)
target_link_libraries(store_ranks PRIVATE pipec_rt)

find_program(PIPEC_PYTHON3 python3)
find_program(MPIRUN mpirun)
if(PIPEC_PYTHON3)
  set(PIPEC_STORE_JOB ${PIPEC_PYTHON3} ${PIPEC_TESTS}/runtime/store_job.py)
  set(PIPEC_TORCHRUN ${PIPEC_PYTHON3} ${PIPEC_TESTS}/launch/torchrun.py --standalone --no-python)
  set(PIPEC_STORE_RANKS_OK "7 keys and the sum 36 checked")

  # our server, a Python client; the Python server (torchrun.py's), the same client
  add_test(NAME store-c-server-python-client
           COMMAND test_store python-client ${PIPEC_PYTHON3} ${PIPEC_TESTS}/runtime/store_client.py)
  add_test(NAME store-python-server-python-client
           COMMAND ${PIPEC_TORCHRUN} --nproc-per-node 1 ${PIPEC_PYTHON3} ${PIPEC_TESTS}/runtime/store_client.py --env)

  # 8 ranks under torchrun: clients of the agent's store (our client, the Python server)
  add_test(NAME store-torchrun-8
           COMMAND ${PIPEC_STORE_JOB}
                   --each-rank 8 "store_ranks: rank {rank} of 8 (torchrun, local {rank} of 8, agent's store): ${PIPEC_STORE_RANKS_OK}"
                   -- ${PIPEC_TORCHRUN} --nproc-per-node 8 $<TARGET_FILE:store_ranks>)
  # torchrun without a shared agent store (TORCHELASTIC_USE_AGENT_STORE=False): rank 0 serves
  add_test(NAME store-torchrun-8-own-store
           COMMAND ${PIPEC_STORE_JOB} --env TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
                   --each-rank 8 "store_ranks: rank {rank} of 8 (torchrun, local {rank} of 8, store of rank 0): ${PIPEC_STORE_RANKS_OK}"
                   -- ${PIPEC_TORCHRUN} --nproc-per-node 8 $<TARGET_FILE:store_ranks>)
  # rank 2 of 3 never arrives: the others name it within PIPEC_TIMEOUT, torchrun stops the job
  add_test(NAME store-torchrun-barrier-timeout
           COMMAND ${PIPEC_STORE_JOB} --expect-fail --max-seconds 30 --env PIPEC_TIMEOUT=3
                   --expect "rank 2 of 3 did not arrive at 'ready' within 3 s" --expect "torchrun.py: rank "
                   -- ${PIPEC_TORCHRUN} --nproc-per-node 3 $<TARGET_FILE:store_ranks> --leave 2)
  set_tests_properties(store-c-server-python-client store-python-server-python-client store-torchrun-8
                       store-torchrun-8-own-store store-torchrun-barrier-timeout PROPERTIES LABELS runtime TIMEOUT 180)

  if(MPIRUN)
    set(PIPEC_MPIRUN ${MPIRUN} --allow-run-as-root --oversubscribe -x MASTER_PORT={port})
    # 8 ranks under mpirun: rank 0 serves from its thread, all are clients
    add_test(NAME store-mpirun-8
             COMMAND ${PIPEC_STORE_JOB}
                     --each-rank 8 "store_ranks: rank {rank} of 8 (openmpi, local {rank} of 8, store of rank 0): ${PIPEC_STORE_RANKS_OK}"
                     -- ${PIPEC_MPIRUN} -np 8 $<TARGET_FILE:store_ranks>)
    add_test(NAME store-mpirun-barrier-timeout
             COMMAND ${PIPEC_STORE_JOB} --expect-fail --max-seconds 30
                     --expect "rank 2 of 3 did not arrive at 'ready' within 3 s"
                     -- ${PIPEC_MPIRUN} -x PIPEC_TIMEOUT=3 -np 3 $<TARGET_FILE:store_ranks> --leave 2)
    # the serving rank never starts: the others give up connecting within PIPEC_TIMEOUT
    add_test(NAME store-mpirun-no-server
             COMMAND ${PIPEC_STORE_JOB} --expect-fail --max-seconds 30
                     --expect "cannot connect within 3 s: Connection refused"
                     -- ${PIPEC_MPIRUN} -x PIPEC_TIMEOUT=3 -np 3 $<TARGET_FILE:store_ranks> --leave 0)
    set_tests_properties(store-mpirun-8 store-mpirun-barrier-timeout store-mpirun-no-server
                         PROPERTIES LABELS runtime TIMEOUT 180)
  endif()
endif()
