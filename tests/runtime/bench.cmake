# bench/run-all.sh: bench-run-all runs its quick mode (-q: front end,
# schedules, sgemm, gpt2-tiny training and generation under mpirun, ~15 s)
# into a file with a hand-written Notes part and checks the tables it writes
# (tests/runtime/bench_run_all.sh). Label stage: it launches multi-rank jobs.
find_program(PIPEC_BENCH_MPIRUN mpirun)
if(PIPEC_BENCH_MPIRUN AND NOT PIPEC_FUZZ)
  add_test(NAME bench-run-all COMMAND sh ${PIPEC_TESTS}/runtime/bench_run_all.sh ${CMAKE_CURRENT_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}
                                      ${CMAKE_CURRENT_BINARY_DIR}/bench-run-all)
  set_tests_properties(bench-run-all PROPERTIES LABELS "stage" TIMEOUT 180)
endif()
