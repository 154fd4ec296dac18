# Tests, run by ctest. Each one checks a real result and can fail.
set(PIPEC_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/tests)

if(NOT PIPEC_FUZZ)
  # Every shipped model passes --check.
  file(GLOB PIPEC_MODELS RELATIVE ${CMAKE_CURRENT_SOURCE_DIR}
       ${CMAKE_CURRENT_SOURCE_DIR}/models/*.pipe ${CMAKE_CURRENT_SOURCE_DIR}/models/examples/*.pipe)
  foreach(m ${PIPEC_MODELS})
    add_test(NAME check:${m} COMMAND pipec --check ${m} WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  endforeach()

  # Schedules: bubble formulas over the whole grid, memory bounds, validation.
  add_executable(test_schedule tests/test_schedule.c)
  target_link_libraries(test_schedule PRIVATE pipec_front m)
  add_test(NAME schedules COMMAND test_schedule)
  add_executable(test_schedule_io tests/test_schedule_io.c)
  target_link_libraries(test_schedule_io PRIVATE pipec_front m)
  add_test(NAME schedule-io COMMAND test_schedule_io)

  # partition = auto: optimal bottleneck (brute force) and faster than even layers.
  add_executable(test_partition tests/test_partition.c)
  target_link_libraries(test_partition PRIVATE pipec_front m)
  add_test(NAME partition COMMAND test_partition)

  # The cost model: FLOPs, parameter and activation bytes of GPT-2 by hand.
  add_executable(test_cost tests/test_cost.c)
  target_link_libraries(test_cost PRIVATE pipec_front m)
  add_test(NAME cost COMMAND test_cost ${CMAKE_CURRENT_SOURCE_DIR})
  # --explain-partition and --dump-plan against outputs worked out by hand.
  add_test(NAME explain-files COMMAND sh ${PIPEC_TESTS}/run_golden.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/explain --explain-partition txt)
  add_test(NAME schedule-files COMMAND sh ${PIPEC_TESTS}/run_golden.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/schedule --dump-schedule txt)
  add_test(NAME kernel-files COMMAND sh ${PIPEC_TESTS}/run_golden.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/kernels --dump-kernels txt)
  add_test(NAME ops-files COMMAND sh ${PIPEC_TESTS}/run_golden.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/ops --dump-ops txt)
  add_test(NAME plan-files COMMAND sh ${PIPEC_TESTS}/run_golden.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/plan --dump-plan txt)

  # Every CPU kernel against a double-precision reference and finite differences.
  add_executable(test_kernels tests/test_kernels.c tests/ref_ops.c)
  target_link_libraries(test_kernels PRIVATE pipec_rt)
  add_test(NAME kernels COMMAND test_kernels)
  # OpenMP threads sleep rather than spin while waiting, so tests running side
  # by side on 2 cores do not starve each other
  set_tests_properties(kernels PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")

  # The CUDA kernels: NVRTC compiles every one for sm_80, sm_90 and PTX (no GPU
  # needed), and the disk cache works; then a CPU emulator of the CUDA
  # threads runs them against a NumPy float64 reference. Labelled `cuda`
  # (the sanitizer pass skips them: NVRTC is not our code).
  if(PIPEC_HAVE_CUDA)
    add_executable(test_nvrtc tests/test_nvrtc.c)
    target_link_libraries(test_nvrtc PRIVATE pipec_front)
    file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/cuda-modules)
    add_test(NAME nvrtc COMMAND test_nvrtc ${CMAKE_CURRENT_SOURCE_DIR}/kernels ${CMAKE_CURRENT_BINARY_DIR}/cuda-modules)
    set_tests_properties(nvrtc PROPERTIES ENVIRONMENT "PIPEC_REQUIRE_NVRTC=1;PIPEC_CUDA_HOME=${PIPEC_CUDA_HOME}"
                         FIXTURES_SETUP cuda_modules LABELS cuda)
    # the Debian interpreter, where python3-numpy installs (build.sh installs both)
    if(NOT Python3_EXECUTABLE AND EXISTS /usr/bin/python3)
      set(Python3_EXECUTABLE /usr/bin/python3)
    endif()
    find_package(Python3 REQUIRED COMPONENTS Interpreter NumPy)
    add_test(NAME cuda-kernels-emulated
             COMMAND sh -c "sh '${PIPEC_TESTS}/gpu/emulator/build.sh' '${CMAKE_CURRENT_BINARY_DIR}/cuda-emu' >/dev/null && PIPEC_LIBCUDA='${CMAKE_CURRENT_BINARY_DIR}/cuda-emu/libcuda-emu.so' '${Python3_EXECUTABLE}' '${PIPEC_TESTS}/gpu/check_kernels.py' '${CMAKE_CURRENT_BINARY_DIR}/cuda-modules' --small")
    set_tests_properties(cuda-kernels-emulated PROPERTIES FIXTURES_REQUIRED cuda_modules LABELS cuda)
    # every model's generated kernels compile for sm_80, sm_90 and PTX
    add_test(NAME emit-kernels COMMAND sh ${PIPEC_TESTS}/emit_kernels.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                          ${CMAKE_CURRENT_BINARY_DIR}/emitted-kernels)
    set_tests_properties(emit-kernels PROPERTIES LABELS cuda ENVIRONMENT "PIPEC_CUDA_HOME=${PIPEC_CUDA_HOME}")
  endif()

  # Autodiff on whole models against finite differences, run by the CPU executor.
  add_executable(test_autodiff tests/test_autodiff.c)
  target_link_libraries(test_autodiff PRIVATE pipec_rt)
  add_test(NAME autodiff COMMAND test_autodiff)
  set_tests_properties(autodiff PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")

  # Tensor parallel (Megatron sharding) gives the single-rank loss and gradients.
  add_executable(test_tp tests/test_tp.c)
  target_link_libraries(test_tp PRIVATE pipec_rt)
  add_test(NAME tensor-parallel COMMAND test_tp)
  set_tests_properties(tensor-parallel PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")

  # The static memory plan follows the schedule (1F1B below GPipe by the expected microbatches).
  add_executable(test_memplan tests/test_memplan.c)
  target_link_libraries(test_memplan PRIVATE pipec_front m)
  add_test(NAME memory-plan COMMAND test_memplan ${CMAKE_CURRENT_SOURCE_DIR})

  # Wrong files: exact diagnostics, exit status 1.
  add_test(NAME bad-files COMMAND sh ${PIPEC_TESTS}/run_bad.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/bad)
  # Right files: each asserts what pipec --dump-model must print.
  add_test(NAME good-files COMMAND sh ${PIPEC_TESTS}/run_good.sh $<TARGET_FILE:pipec> ${PIPEC_TESTS}/good)
  # The command line: --help, --version, exit statuses, --world-size.
  add_test(NAME cli COMMAND sh ${PIPEC_TESTS}/cli.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR})
endif()

if(PIPEC_FUZZ)
  set(PIPEC_FUZZ_SECONDS 60 CACHE STRING "How long the fuzz test runs")
  add_test(NAME fuzz-front
           COMMAND sh ${PIPEC_TESTS}/fuzz/run_fuzz.sh $<TARGET_FILE:fuzz_front> ${CMAKE_CURRENT_SOURCE_DIR} ${PIPEC_FUZZ_SECONDS})
endif()

# A multi-rank script of tests/stage: sh SCRIPT PIPEC SRC WORK_DIR, label
# stage, the build's own NVRTC cache; only where mpirun is installed.
function(pipec_mpirun_script_test name script timeout)
  find_program(PIPEC_MPIRUN mpirun)
  if(PIPEC_MPIRUN)
    add_test(NAME ${name} COMMAND sh ${PIPEC_TESTS}/stage/${script} $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                  ${CMAKE_CURRENT_BINARY_DIR}/${name})
    set_tests_properties(${name} PROPERTIES LABELS "stage" TIMEOUT ${timeout}
                         ENVIRONMENT "PIPEC_CACHE_DIR=${CMAKE_CURRENT_BINARY_DIR}/nvrtc-cache")
  endif()
endfunction()

# The runtime's own tests (store, host transport, device), one fragment each.
if(NOT PIPEC_FUZZ)
  file(GLOB PIPEC_RT_TEST_FRAGMENTS ${CMAKE_CURRENT_SOURCE_DIR}/tests/runtime/*.cmake)
  foreach(f ${PIPEC_RT_TEST_FRAGMENTS})
    include(${f})
  endforeach()
endif()

# The stage programs: compile gpt2-tiny, launch it with mpirun in many layouts.
if(NOT PIPEC_FUZZ)
  pipec_mpirun_script_test(stage-programs run_stages.sh 900)
endif()
