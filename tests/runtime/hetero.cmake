# Heterogeneous pipeline templates (Oobleck) compiled to stage programs: a
# 1-stage + 2-stage pair of gpt2-tiny trains like 1 rank (tests/stage/hetero.sh).
if(NOT PIPEC_FUZZ)
  pipec_mpirun_script_test(stage-hetero hetero.sh 600)
endif()
