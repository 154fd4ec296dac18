#!/bin/sh
# emit_kernels.sh PIPEC SRC OUTDIR — `pipec --emit kernels` for GPT-2 small,
# GPT-2 medium, PyTorch's tutorial model and the tiny GPT-2 (tp = 2 with a
# vocabulary-parallel head): the CUDA C is written, NVRTC
# compiles it for sm_80 and sm_90 (cubins: ELF files for the CUDA machine)
# and to PTX for compute_90 (with an .entry per kernel). A second run is
# served by the cache.
set -u
pipec=$1 src=$2 out=$3
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
mkdir -p "$out"
export PIPEC_CACHE_DIR="$out/cache"
rm -rf "$PIPEC_CACHE_DIR"
for m in gpt2 gpt2-medium pipelining-tutorial gpt2-tiny; do
  log=$("$pipec" --emit kernels "$out" "$src/models/$m.pipe" 2>&1) || { bad "$m: pipec failed"; echo "$log"; continue; }
  name=$(printf '%s\n' "$log" | sed -n 's|.*/\([A-Za-z0-9_]*\)\.cu: .*|\1|p')
  wrappers=$(grep -c '^extern "C" __global__' "$out/$name.cu")
  [ "$wrappers" -gt 5 ] && ok "$m: $wrappers kernels in $name.cu" || bad "$m: $wrappers kernels"
  for arch in sm_80 sm_90; do
    f="$out/$name.$arch.cubin"
    if [ -f "$f" ] && [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = "177ELF" ]; then ok "$m: $arch cubin"; else bad "$m: $arch cubin"; fi
  done
  entries=$(grep -c '^\.\(visible \)*\.*entry pipec_' "$out/$name.compute_90.ptx")
  [ "$entries" -ge "$wrappers" ] && ok "$m: PTX has $entries entries" || bad "$m: PTX has $entries entries for $wrappers kernels"
  again=$("$pipec" --emit kernels "$out" "$src/models/$m.pipe" 2>&1)
  hits=$(printf '%s\n' "$again" | grep -c "from the cache")
  [ "$hits" -eq 3 ] && ok "$m: rebuilt from the cache" || bad "$m: $hits of 3 from the cache"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
