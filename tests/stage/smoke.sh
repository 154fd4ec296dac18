#!/bin/sh
# smoke.sh PIPEC SRC OUT — every path of a stage program once, briefly, so
# the sanitizer build (where the longer stage tests do not run) sees them:
# 4 ranks (pp 2 x tp 2) train 3 steps on a token file with validation and
# checkpoints, resume to step 4, generate greedy, top-p and beam-search
# tokens from the checkpoint, and stop on a bad data file. Each must exit
# as expected (under ASan: with no error or leak report).
set -u
pipec=$1 src=$2 out=$3
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 1
sed -e 's/sampling = greedy/sampling = beam(2)/' "$src/models/gpt2-tiny.pipe" >tiny.pipe
"$pipec" tiny.pipe -o t >build.log 2>&1 || { bad "gpt2-tiny compiles"; cat build.log; }
python3 -c "
import struct, random
random.seed(3)
toks = [random.randrange(512) for _ in range(3000)]
open('data.bin', 'wb').write(struct.pack('<256i', 20240520, 1, len(toks), *([0] * 253)) + struct.pack('<%dH' % len(toks), *toks))
" || bad "writing a token file"
run() { # expected-status name args...
  want=$1 name=$2; shift 2
  mpi_job 300 4 t/launch "$@" >"$name.out" 2>"$name.err"
  rc=$?
  if [ $rc -eq "$want" ] && ! grep -qE "Sanitizer|runtime error" "$name.err"; then ok "$name (status $rc)"; else
    bad "$name: status $rc (want $want)"; grep -E "Sanitizer|runtime error|pipec" "$name.err" | head -5; fi
}
run 0 train --steps 3 --data data.bin --val-data data.bin --val-every 2 --save ck --save-every 2
run 0 resume --steps 4 --data data.bin --resume ck
run 0 greedy --generate --weights ck --prompt-ids 5,17,300 --max-new-tokens 6 --ids --sampling beam:2
run 0 top-p --generate --weights ck --prompt-ids 5,17 --max-new-tokens 6 --ids --sampling top_p:0.9 --seed 3
printf 'abc' >odd.bin
run 1 bad-data --steps 1 --data odd.bin
grep -q "odd size" bad-data.err && ok "the bad file is named" || bad "bad data: $(cat bad-data.err | head -3)"
grep -q "resumed from ck/step-3" resume.out && ok "resumed from step 3" || bad "resume: $(head -3 resume.out)"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
