# Training data (runtime/data.c, the manifest's data line, pipec_eval) and
# `pipec tokenize`. data-stage launches gpt2-tiny on token files in several
# layouts (label stage: multi-process); data-tokenize round-trips this
# repository's docs through GPT-2's BPE cut to 512 ids (label formats).
find_program(PIPEC_DATA_MPIRUN mpirun)
find_program(PIPEC_DATA_PYTHON python3)
if(PIPEC_DATA_MPIRUN AND PIPEC_DATA_PYTHON)
  add_test(NAME data-stage COMMAND sh ${PIPEC_TESTS}/runtime/data_run.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                   ${CMAKE_CURRENT_BINARY_DIR}/data-stage ${PIPEC_DATA_PYTHON})
  set_tests_properties(data-stage PROPERTIES LABELS "stage" TIMEOUT 600
                       ENVIRONMENT "PIPEC_CACHE_DIR=${CMAKE_CURRENT_BINARY_DIR}/nvrtc-cache")
endif()
add_test(NAME data-tokenize COMMAND sh ${PIPEC_TESTS}/runtime/data_tokenize.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR}
                                    ${CMAKE_CURRENT_BINARY_DIR}/tokenizer ${CMAKE_CURRENT_BINARY_DIR}/data-tokenize)
set_tests_properties(data-tokenize PROPERTIES FIXTURES_REQUIRED gpt2_tokenizer LABELS formats)
