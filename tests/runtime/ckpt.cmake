# Checkpoints, initial weights and `pipec merge` (lib/ckpt.c, runtime/ckpt.c).
#  ckpt-merge: pipec merge of a tp 2 x pp 2 checkpoint written by
#    tests/stage/ckpt_files.py (every shard kind) gives exactly the Hugging
#    Face file it was cut from; no launcher, so it also runs under ASan.
#  ckpt-stage: tests/stage/ckpt.sh, gpt2-tiny under mpirun (label stage).
if(EXISTS /usr/bin/python3)
  set(PIPEC_CKPT_PYTHON /usr/bin/python3)
else()
  find_program(PIPEC_CKPT_PYTHON python3)
endif()
set(PIPEC_CKPT_WORK ${CMAKE_CURRENT_BINARY_DIR}/ckpt-work)
add_test(NAME ckpt-merge
         COMMAND sh -c "rm -rf \"$1\" && mkdir -p \"$1\" && cd \"$1\" && \"$2\" \"$3\" fake_ckpt fake expect.safetensors && \"$4\" merge fake -o merged.safetensors && \"$2\" \"$3\" compare expect.safetensors merged.safetensors 0 && rm fake/step-3/model-pp0-tp1.safetensors && ! \"$4\" merge fake -o merged.safetensors 2>err && grep -q 'model-pp0-tp1.safetensors is missing' err && \"$2\" \"$3\" compare expect.safetensors merged.safetensors 0"
                 sh ${PIPEC_CKPT_WORK}/merge ${PIPEC_CKPT_PYTHON} ${PIPEC_TESTS}/stage/ckpt_files.py $<TARGET_FILE:pipec>)
find_program(PIPEC_CKPT_MPIRUN mpirun)
if(PIPEC_CKPT_MPIRUN)
  add_test(NAME ckpt-stage COMMAND sh ${PIPEC_TESTS}/stage/ckpt.sh $<TARGET_FILE:pipec> ${CMAKE_CURRENT_SOURCE_DIR} ${PIPEC_CKPT_WORK}/stage
                                   ${PIPEC_CKPT_PYTHON})
  set_tests_properties(ckpt-stage PROPERTIES LABELS "stage" TIMEOUT 300
                       ENVIRONMENT "PIPEC_CACHE_DIR=${CMAKE_CURRENT_BINARY_DIR}/nvrtc-cache")
endif()
