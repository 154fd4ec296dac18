# runtime/device.c: tests without a GPU (label runtime) and the GPU check
# (label cuda, skipped with exit code 77 where there is no GPU).
# Included from tests/tests.cmake, so paths are relative to the top level.

# Stand-ins for the three libraries device.c dlopens, each under the exact
# file name it asks for, in a directory of their own that test_device puts
# on LD_LIBRARY_PATH for the cases that need a "device".
set(PIPEC_FAKE_CUDA_DIR ${CMAKE_BINARY_DIR}/fake-cuda)
foreach(fake cuda:fake_libcuda.c:.so.1 cublasLt:fake_libcublaslt.c:.so.13 nccl:fake_libnccl.c:.so.2)
  string(REPLACE ":" ";" parts ${fake})
  list(GET parts 0 lib)
  list(GET parts 1 src)
  list(GET parts 2 suffix)
  add_library(pipec_fake_${lib} SHARED ${CMAKE_CURRENT_LIST_DIR}/${src})
  set_target_properties(pipec_fake_${lib} PROPERTIES
    OUTPUT_NAME ${lib} PREFIX lib SUFFIX ${suffix} NO_SONAME ON
    LIBRARY_OUTPUT_DIRECTORY ${PIPEC_FAKE_CUDA_DIR}
    C_VISIBILITY_PRESET hidden)
  list(APPEND PIPEC_FAKE_CUDA_TARGETS pipec_fake_${lib})
endforeach()

add_executable(test_device ${CMAKE_CURRENT_LIST_DIR}/test_device.c)
target_link_libraries(test_device PRIVATE pipec_rt m)
add_dependencies(test_device ${PIPEC_FAKE_CUDA_TARGETS})
add_test(NAME device COMMAND test_device ${PIPEC_FAKE_CUDA_DIR})
set_tests_properties(device PROPERTIES LABELS runtime TIMEOUT 120)

# The same binary's dynamic section, read by the system's own tool: no CUDA
# library is NEEDED (test_device calls every prt_* function).
find_program(PIPEC_READELF NAMES readelf)
if(PIPEC_READELF)
  add_test(NAME device-needs-no-cuda
           COMMAND sh -c "'${PIPEC_READELF}' -d \"$0\" | grep -q NEEDED || exit 1; ! '${PIPEC_READELF}' -d \"$0\" | grep NEEDED | grep -E 'libcuda|libnccl|libcublas|libcudart'"
                   $<TARGET_FILE:test_device>)
  set_tests_properties(device-needs-no-cuda PROPERTIES LABELS runtime)
endif()

# On a machine with a GPU: real driver, cuBLASLt and NCCL (see
# tests/gpu/README-device.md); exits 77 (skipped) without one.
add_executable(device_check ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/device_check.c)
target_link_libraries(device_check PRIVATE pipec_rt m)
add_test(NAME device-gpu COMMAND device_check)
set_tests_properties(device-gpu PROPERTIES LABELS cuda SKIP_RETURN_CODE 77 TIMEOUT 300)

# The CUDA emulator (tests/gpu/emulator: the kernels of kernels/*.cuh compiled
# as C++, run on the CPU with one fiber per CUDA thread) as a whole
# libcuda.so.1, in a directory of its own next to copies of the fake cuBLASLt
# and NCCL above: on LD_LIBRARY_PATH it is a GPU for runtime/device.c.
# test_kernels_dev runs every d_X of runtime/kernels_dev.c on it against its
# CPU twin k_X. Needs a C++17 compiler; built by build.sh with its own flags
# (never the sanitizers': it is a stand-in for the driver, not code under
# test).
include(CheckLanguage)
check_language(CXX)
set(PIPEC_HAVE_CXX17 OFF)
if(CMAKE_CXX_COMPILER)
  set(probe ${CMAKE_BINARY_DIR}/CMakeFiles/pipec_cxx17_probe.cpp)
  file(WRITE ${probe} "inline int x = 0;\ntemplate <typename... A> int f(A... a) {\n  if constexpr (sizeof...(A) > 0) return (a + ...);\n  else return x;\n}\nint main() { return f(1, 2) - 3; }\n")
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -std=c++17 -fsyntax-only ${probe} RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(PIPEC_HAVE_CXX17 ON)
  endif()
endif()

if(PIPEC_HAVE_CXX17)
  set(PIPEC_CUDA_EMU_DIR ${CMAKE_BINARY_DIR}/cuda-emulator)
  file(GLOB PIPEC_EMU_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/kernels/*.cuh ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/emulator/*
       ${CMAKE_CURRENT_SOURCE_DIR}/tests/runtime/cuda_errors.inc)
  add_custom_command(
    OUTPUT ${PIPEC_CUDA_EMU_DIR}/libcuda.so.1 ${PIPEC_CUDA_EMU_DIR}/libcublasLt.so.13 ${PIPEC_CUDA_EMU_DIR}/libnccl.so.2
    COMMAND ${CMAKE_COMMAND} -E env CXX=${CMAKE_CXX_COMPILER}
            sh ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/emulator/build.sh ${PIPEC_CUDA_EMU_DIR} libcuda.so.1
    COMMAND ${CMAKE_COMMAND} -E copy $<TARGET_FILE:pipec_fake_cublasLt> $<TARGET_FILE:pipec_fake_nccl> ${PIPEC_CUDA_EMU_DIR}
    DEPENDS ${PIPEC_EMU_SOURCES} pipec_fake_cublasLt pipec_fake_nccl
    COMMENT "Building the CUDA emulator (libcuda.so.1 on the CPU) in ${PIPEC_CUDA_EMU_DIR}")
  add_custom_target(pipec_cuda_emulator ALL
    DEPENDS ${PIPEC_CUDA_EMU_DIR}/libcuda.so.1 ${PIPEC_CUDA_EMU_DIR}/libcublasLt.so.13 ${PIPEC_CUDA_EMU_DIR}/libnccl.so.2)

  # every d_X against its k_X on the emulator (also under ASan: the emulator
  # is not instrumented, and ASan intercepts its swapcontext)
  add_executable(test_kernels_dev ${CMAKE_CURRENT_LIST_DIR}/test_kernels_dev.c)
  target_link_libraries(test_kernels_dev PRIVATE pipec_rt m)
  add_dependencies(test_kernels_dev pipec_cuda_emulator)
  add_test(NAME kernels-dev-emu COMMAND test_kernels_dev ${PIPEC_CUDA_EMU_DIR})
  set_tests_properties(kernels-dev-emu PROPERTIES LABELS runtime TIMEOUT 120 ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
  # the stage programs' device code end to end on the emulator: 1 rank and
  # 2 ranks sharing the GPU against the CPU, a GPU checkpoint resumed on the CPU
  if(NOT PIPEC_FUZZ)
    add_test(NAME stage-gpu-emu COMMAND sh ${PIPEC_TESTS}/stage/gpu_emu.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                        ${CMAKE_CURRENT_BINARY_DIR}/stage-gpu-emu ${PIPEC_CUDA_EMU_DIR})
    set_tests_properties(stage-gpu-emu PROPERTIES LABELS "stage" TIMEOUT 600)
  endif()
endif()
# the same on this machine's GPU (label cuda; skipped without one)
if(NOT PIPEC_FUZZ)
  add_test(NAME stage-gpu COMMAND sh ${PIPEC_TESTS}/stage/gpu_emu.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                  ${CMAKE_CURRENT_BINARY_DIR}/stage-gpu system)
  set_tests_properties(stage-gpu PROPERTIES LABELS "cuda" SKIP_RETURN_CODE 77 TIMEOUT 600)
else()
  message(STATUS "pipec: no C++17 compiler; the CUDA emulator and the kernels-dev-emu test are not built")
endif()

# The fake NCCL as a multi-process library: forked jobs of 2 to 4 ranks
# (all-reduce, split, grouped and blocking send/recv, timeouts, a dead peer).
add_executable(test_fake_nccl ${CMAKE_CURRENT_LIST_DIR}/test_fake_nccl.c)
target_include_directories(test_fake_nccl PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_fake_nccl PRIVATE ${CMAKE_DL_LIBS})
add_dependencies(test_fake_nccl pipec_fake_nccl)
add_test(NAME device-fake-nccl COMMAND test_fake_nccl ${PIPEC_FAKE_CUDA_DIR})
set_tests_properties(device-fake-nccl PROPERTIES LABELS runtime TIMEOUT 60)
