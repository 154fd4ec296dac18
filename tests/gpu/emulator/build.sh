#!/bin/sh
# build.sh OUT_DIR [NAME] — builds OUT_DIR/NAME (default libcuda-emu.so), a
# stand-in for libcuda that runs the kernels of kernels/*.cuh on the CPU
# (simt.h), so that tests/gpu/check_kernels.py can check the kernels' logic
# without a GPU:
#
#   sh tests/gpu/emulator/build.sh /tmp/emu
#   PIPEC_LIBCUDA=/tmp/emu/libcuda-emu.so python3 tests/gpu/check_kernels.py MODULES_DIR --small
#
# (MODULES_DIR as for a GPU; the emulator ignores the images but the script
# wants them.) With NAME libcuda.so.1 the directory can go on
# LD_LIBRARY_PATH in place of the driver, for runtime/device.c (the CMake
# target pipec_cuda_emulator does that, next to the fake cuBLASLt and NCCL).
# Needs a C++17 compiler (CXX). Slow: one fiber per CUDA thread.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kernels="$here/../../../kernels"
out=$1
name=${2:-libcuda-emu.so}
mkdir -p "$out"
# common.cuh first, activation.cuh before matmul_epilogue.cuh, then the rest
headers="common activation $(cd "$kernels" && ls *.cuh | sed 's/\.cuh$//' | grep -v -x -e common -e activation)"
{
  for h in $headers; do sed 's/extern __shared__/extern/' "$kernels/$h.cuh"; done
  for h in $headers; do
    [ "$h" = common ] && continue
    H=$(echo "$h" | tr a-z A-Z)
    printf 'PIPEC_%s_ENTRIES(float, f32)\nPIPEC_%s_ENTRIES(__nv_bfloat16, bf16)\n' "$H" "$H"
    if grep -q "PIPEC_${H}_UNTYPED_ENTRIES" "$kernels/$h.cuh"; then printf 'PIPEC_%s_UNTYPED_ENTRIES()\n' "$H"; fi
  done
  echo 'float attn_smem[1 << 16]; /* dynamic shared memory: 256 KiB */'
} > "$out/kernels.inc"
# the entry points, read from the ENTRIES macros
{
  grep -ho 'pipec_[a-z0-9_]*_##SFX' "$kernels"/*.cuh | sed 's/_##SFX$//' | sort -u |
    while read -r e; do printf 'ENTRY(%s_f32)\nENTRY(%s_bf16)\n' "$e" "$e"; done
  grep -ho 'void pipec_[a-z0-9_]*(' "$kernels"/*.cuh | sed 's/^void \(.*\)($/ENTRY(\1)/' | sort -u
} > "$out/entries.inc"
${CXX:-c++} -std=c++17 -O2 -fPIC -shared -fno-strict-aliasing -Wno-unknown-pragmas -I"$here" -I"$out" \
  -include "$here/simt.h" "$here/libcuda.cpp" -o "$out/$name.tmp"
mv "$out/$name.tmp" "$out/$name"
echo "$out/$name: $(grep -c ENTRY "$out/entries.inc") entry points"
