#!/bin/sh
# data_run.sh PIPEC SRC OUT PYTHON — gpt2-tiny trained on token files.
#
#  1. One rank on an llm.c token file: 10 steps, the loss falls, each line
#     has a positive MFU; a second run (in 4) prints the same losses, bitwise.
#  2. The same tokens as two shards (a glob; sequences cross the boundary)
#     and as a headerless file give the same losses, bitwise.
#  3. dp 2, pp 2 x tp 2 (4 ranks) and interleaved pp 2 x 2 chunks train on
#     the same sequences: the same losses as one rank (relative <= 1e-5).
#  4. Validation before training and every 5 steps: three `val` lines,
#     equal across the layouts;
#     `data`/`val_data`/`val_every` in the .pipe's train section do what the
#     options do.
#  5. A bad file stops the job (1 rank; 4 for one case) with one line naming it: a token id >=
#     the vocabulary (its position), a wrong magic, too few tokens, no match.
#  6. The progress bar: on a terminal (script(1)) but never in a file.
set -u
pipec=$1 src=$2 out=$3 python=$4
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out" && cd "$out" || exit 1
tiny=$src/models/gpt2-tiny.pipe

# token data: a noisy walk over the 512 ids (learnable), 20000 tokens
"$python" - <<'EOF' || { echo "FAIL cannot write the token files"; exit 1; }
import array, random, struct
random.seed(7)
t = [0] * 20000
for i in range(1, len(t)): t[i] = (t[i - 1] * 7 + random.randrange(3)) % 512
def w(name, toks, magic=20240520, header=True):
    with open(name, 'wb') as f:
        if header: f.write(struct.pack('<256i', magic, 1, len(toks), *[0] * 253))
        f.write(array.array('H', toks).tobytes())
w('all.bin', t); w('shard_0.bin', t[:12345]); w('shard_1.bin', t[12345:]); w('raw.bin', t, header=False)
w('val.bin', [(x * 3 + 1) % 512 for x in t[:3000]])
b = list(t); b[777] = 600; w('badid.bin', b)
w('badmagic.bin', t, magic=20240521); w('short.bin', t[:50])
EOF

variant() { # name "parallel line" "split line" schedule [extra train line]
  sed -e "s/^parallel .*/$2/" -e "s/^split .*/$3/" -e "s/schedule = 1f1b/schedule = $4/" -e "s|^train {|train {\n  ${5:-}|" "$tiny" >"$1.pipe"
  "$pipec" "$1.pipe" -o "$1" >"$1.log" 2>&1 || { bad "$1 compiles"; cat "$1.log"; }
}
variant r1 "parallel { tp = 1   pp = 1 }" "" 1f1b
variant dp2 "parallel { tp = 1   pp = 1   dp = 2 }" "" 1f1b
variant tiny "parallel { tp = 2   pp = 2 }" "split { layers.2: BEGINNING }" 1f1b
variant inter "parallel { tp = 1   pp = 2   virtual = 2 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" interleaved
variant r1pipe "parallel { tp = 1   pp = 1 }" "" 1f1b "data = \"$out/shard_*.bin\"   val_data = \"$out/val.bin\"   val_every = 5"
ranks() { sed -n 's/.*nproc-per-node \([0-9]*\).*/\1/p' "$1.log"; }
run() { # name out [args]: the job's stdout in out, stderr in out.err; a free port each time (tests run side by side)
  v=$1 o=$2; shift 2
  mpi_job 300 "$(ranks "$v")" "$v/launch" "$@" >"$o" 2>"$o.err"
}
losses() { grep '^step' "$1" | awk '{print $5}'; }
vals() { grep '^val ' "$1" | awk '{print $6}'; }
same() { # a b: the same numbers within 1e-5 relative, and as many
  [ "$(wc -l <"$1")" -eq "$(wc -l <"$2")" ] && [ -s "$1" ] &&
    paste "$1" "$2" | awk '{ d = ($1 - $2) / $1; if (d < 0) d = -d; if (d > 1e-5) exit 1 }'
}

# 1. one rank, twice
run r1 r1.out --data all.bin && ok "1 rank trains on all.bin" || { bad "1 rank on all.bin"; tail -3 r1.out.err; }
losses r1.out >r1.losses
first=$(head -1 r1.losses) last=$(tail -1 r1.losses)
[ "$(wc -l <r1.losses)" -eq 10 ] && awk -v a="$first" -v z="$last" 'BEGIN { exit !(a > 0 && z < a - 0.05) }' &&
  ok "10 steps, the loss falls ($first -> $last)" || bad "losses: $(tr '\n' ' ' <r1.losses)"
grep '^step' r1.out | awk '{ if (!($NF ~ /%$/) || $(NF-1) != "MFU" || $NF + 0 <= 0) exit 1 }' && grep -q "peak [0-9.]* GFLOP/s" r1.out &&
  ok "every step line ends with a positive MFU" || bad "MFU: $(grep '^step' r1.out | head -1)"

# 2. shards and headerless
run r1 shards.out --data "$out/shard_*.bin"
losses shards.out | cmp -s - r1.losses && ok "2 shards (a glob) = the one file, bitwise" || { bad "shards differ"; tail -2 shards.out.err; }
run r1 raw.out --data raw.bin
losses raw.out | cmp -s - r1.losses && ok "a headerless file = the llm.c file, bitwise" || { bad "headerless differs"; tail -2 raw.out.err; }

# 3 and 4. layouts, with validation
run r1 r1v.out --data all.bin --val-data val.bin --val-every 5
vals r1v.out >r1.vals
[ "$(wc -l <r1.vals)" -eq 3 ] && grep -q '^val     0/10 | val loss' r1v.out && grep -q '^val     5/10 | val loss' r1v.out &&
  ok "validation before training and every 5 steps: 3 val lines ($(tr '\n' ' ' <r1.vals))" ||
  { bad "val lines: $(grep -c '^val' r1v.out)"; tail -3 r1v.out.err; }
losses r1v.out | cmp -s - r1.losses && ok "a second run, validating, prints the same losses (bitwise)" || bad "a second run (validating) differs"
for v in dp2 tiny inter; do
  run $v $v.out --data all.bin --val-data val.bin --val-every 5 || { bad "$v ran"; tail -3 $v.out.err; continue; }
  losses $v.out >$v.losses && vals $v.out >$v.vals
  same r1.losses $v.losses && ok "$v ($(ranks $v) ranks): the losses of 1 rank" || bad "$v losses: $(tr '\n' ' ' <$v.losses)"
  same r1.vals $v.vals && ok "$v: the val losses of 1 rank" || bad "$v val losses: $(tr '\n' ' ' <$v.vals) vs $(tr '\n' ' ' <r1.vals)"
done
run r1pipe r1pipe.out
losses r1pipe.out | cmp -s - r1.losses && vals r1pipe.out | cmp -s - r1.vals &&
  ok "data, val_data and val_every in the .pipe = the options" || { bad "from the .pipe: $(vals r1pipe.out | tr '\n' ' ')"; tail -2 r1pipe.out.err; }

# 5. bad files, in one rank and in 4
err_case() { # file expected-text [another layout]
  for v in r1 ${3:-}; do
    run $v bad.out --data "$1"
    rc=$?
    [ $rc -ne 0 ] && grep -q "$2" bad.out.err && ! grep -q '^step' bad.out && ok "$v, $1: stops, '$2'" ||
      { bad "$v, $1: status $rc"; grep pipec bad.out.err | head -3; }
  done
}
err_case badid.bin "badid.bin: token 600 at position 777 (byte 2578) is not below the vocabulary size 512" tiny
err_case badmagic.bin "badmagic.bin: magic number 20240521 is not 20240520"
err_case short.bin "short.bin: 50 tokens, but a sequence of 64 needs at least 66"
err_case "nothing_*.bin" "nothing_\*.bin: no file matches"

# 6. the progress bar
if command -v script >/dev/null 2>&1; then
  MASTER_PORT=$(comm_free_port) script -qc "r1/launch --data all.bin --steps 3" /dev/null >tty.out 2>&1 </dev/null
  grep -q '\] step 3/3' tty.out && ok "a progress bar on a terminal" || bad "no bar on a terminal: $(tail -2 tty.out)"
fi
MASTER_PORT=$(comm_free_port) r1/launch --data all.bin --steps 3 >file.out 2>&1
! grep -q 's left' file.out && [ "$(grep -c '^step' file.out)" -eq 3 ] && ok "no bar in a file" || bad "bar in a file: $(cat file.out)"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
