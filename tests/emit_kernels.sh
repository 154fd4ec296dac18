#!/bin/sh
# emit_kernels.sh PIPEC SRC OUTDIR — `pipec -o DIR --emit kernels` for GPT-2
# small, GPT-2 medium, PyTorch's tutorial model and the tiny GPT-2 (tp = 2
# with a vocabulary-parallel head): each stage's CUDA C is written, NVRTC
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
  d=$out/$m
  log=$("$pipec" "$src/models/$m.pipe" -o "$d" --emit kernels 2>&1) || { bad "$m: pipec failed"; echo "$log"; continue; }
  stages=0 total=0
  for cu in "$d"/*.kernels.cu; do
    st=${cu%.kernels.cu}
    stages=$((stages + 1))
    wrappers=$(grep -c '^extern "C" __global__' "$cu")
    total=$((total + wrappers))
    for arch in sm_80 sm_90; do
      f="$st.kernels.$arch.cubin"
      [ -f "$f" ] && [ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" = "177ELF" ] || bad "$m: $(basename "$st") $arch cubin"
    done
    entries=$(grep -c '^\.\(visible \)*\.*entry pipec_' "$st.kernels.compute_90.ptx")
    [ "$entries" -ge "$wrappers" ] || bad "$m: $(basename "$st") PTX has $entries entries for $wrappers kernels"
  done
  [ "$stages" -ge 1 ] && [ "$total" -gt 5 ] && ok "$m: $total kernels over $stages stages, cubins and PTX" || bad "$m: $total kernels in $stages stages"
  again=$("$pipec" "$src/models/$m.pipe" -o "$d" --emit kernels 2>&1)
  hits=$(printf '%s\n' "$again" | grep -c "from the cache")
  [ "$hits" -eq $((3 * stages)) ] && ok "$m: rebuilt from the cache" || bad "$m: $hits of $((3 * stages)) from the cache"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
