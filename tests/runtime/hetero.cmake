# Heterogeneous pipeline templates (Oobleck) compiled to stage programs: a
# 1-stage + 2-stage pair of gpt2-tiny trains like 1 rank (tests/stage/hetero.sh).
if(NOT PIPEC_FUZZ)
  find_program(PIPEC_MPIRUN mpirun)
  if(PIPEC_MPIRUN)
    add_test(NAME stage-hetero COMMAND sh ${PIPEC_TESTS}/stage/hetero.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                          ${CMAKE_CURRENT_BINARY_DIR}/stage-hetero)
    set_tests_properties(stage-hetero PROPERTIES LABELS "stage" TIMEOUT 600
                         ENVIRONMENT "PIPEC_CACHE_DIR=${CMAKE_CURRENT_BINARY_DIR}/nvrtc-cache")
  endif()
endif()
