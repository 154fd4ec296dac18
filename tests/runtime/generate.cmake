# Generation with the stage programs (launch --generate): the same tokens in
# every layout, sampling seeds, errors. Label `stage` (multi-process; not
# run under the sanitizers).
if(NOT PIPEC_FUZZ)
  add_executable(gen_reference tests/stage/gen_reference.c)
  target_link_libraries(gen_reference PRIVATE pipec_rt m)
  add_test(NAME stage-generate COMMAND sh ${PIPEC_TESTS}/stage/generate.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                       ${CMAKE_CURRENT_BINARY_DIR}/stage-generate $<TARGET_FILE:gen_reference>)
  set_tests_properties(stage-generate PROPERTIES LABELS "stage" TIMEOUT 600)
  # every path once, briefly: also in the sanitizer build (label runtime, not stage)
  add_test(NAME stage-smoke COMMAND sh ${PIPEC_TESTS}/stage/smoke.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                    ${CMAKE_CURRENT_BINARY_DIR}/stage-smoke)
  set_tests_properties(stage-smoke PROPERTIES LABELS "runtime" TIMEOUT 600)
endif()
