#!/bin/sh
# generate.sh PIPEC SRC OUT REFERENCE — generation with the stage programs (launch --generate).
#
#  0. Greedy decoding with the KV cache gives the tokens the reference
#     executor gives when it reruns the whole sequence for every token
#     (REFERENCE: tests/stage/gen_reference.c).
#  1. Greedy decoding of gpt2-tiny (seed weights, a prompt of token ids)
#     gives the same tokens on 1 rank, pp 2 x tp 2, pp 2 with 2 chunks per
#     rank (interleaved), and dp 2; so do top-k sampling with a seed, and
#     beam search with 3 beams (compiled with infer { sampling = beam(3) }).
#     So does pp 2 x tp 2 with weights from a checkpoint 1 rank saved
#     (--weights), against the reference executor reading the same files.
#     A model with no train section builds programs that only generate
#     (parameters alone in memory) and decode as the reference does.
#     A heterogeneous pair (1-stage + 2-stage pipelines) decodes as the
#     reference executor does.
#  2. Sampling depends on its seed; greedy does not.
#  3. Errors: a prompt id outside the vocabulary, a beam count the build
#     was not compiled for, an unknown option.
set -u
pipec=$1 src=$2 out=$3 reference=$4
. "$src/tests/stage/common.sh"
rm -rf "$out" && mkdir -p "$out"
tiny=$src/models/gpt2-tiny.pipe
variant() { # name "parallel line" "split line" schedule [sampling]
  sed -e "s/^parallel .*/$2/" -e "s/^split .*/$3/" -e "s/schedule = 1f1b/schedule = $4/" -e "s/sampling = greedy/sampling = ${5:-greedy}/" "$tiny" >"$out/$1.pipe"
  "$pipec" "$out/$1.pipe" -o "$out/$1" >"$out/$1.log" 2>&1 || { bad "$1 compiles"; cat "$out/$1.log"; }
}
ranks() { sed -n 's/.*nproc-per-node \([0-9]*\).*/\1/p' "$out/$1.log"; }
gen() { # variant tag args...: the generated ids on stdout
  v=$1 tag=$2; shift 2
  mpi_job 120 "$(ranks "$v")" "$out/$v/launch" --generate --prompt-ids 5,17,300,42 --ids "$@" \
    >"$out/$v.$tag.out" 2>"$out/$v.$tag.err"
  sed -n 's/^pipec: generated ids: //p' "$out/$v.$tag.out"
}

variant r1 "parallel { tp = 1   pp = 1 }" "" 1f1b
variant pp2tp2 "parallel { tp = 2   pp = 2 }" "split { layers.2: BEGINNING }" 1f1b
variant inter "parallel { tp = 1   pp = 2   virtual = 2 }" "split { layers.1: BEGINNING  layers.2: BEGINNING  layers.3: BEGINNING }" interleaved
variant dp2 "parallel { tp = 1   pp = 1   dp = 2 }" "" 1f1b
variant beam-r1 "parallel { tp = 1   pp = 1 }" "" 1f1b "beam(3)"
variant beam-pp2tp2 "parallel { tp = 2   pp = 2 }" "split { layers.2: BEGINNING }" 1f1b "beam(3)"

# 1. the same tokens in every layout
ref=$(gen r1 greedy --max-new-tokens 24)
[ "$(echo "$ref" | wc -w)" -eq 24 ] && ok "1 rank: 24 greedy tokens ($ref)" || { bad "1 rank greedy: '$ref'"; cat "$out/r1.greedy.err"; }
grep -q "tokens/s" "$out/r1.greedy.out" && ok "tokens/s reported" || bad "no tokens/s line"
want=$("$reference" "$out/r1.pipe" 5,17,300,42 24)
[ -n "$want" ] && [ "$ref" = "$want" ] && ok "KV-cache decoding equals the reference executor's full forward per token" ||
  bad "1 rank: '$ref', the reference executor: '$want'"
for v in pp2tp2 inter dp2; do
  got=$(gen $v greedy --max-new-tokens 24)
  [ -n "$got" ] && [ "$got" = "$ref" ] && ok "$v: greedy tokens equal 1 rank's" || { bad "$v greedy: '$got' vs '$ref'"; tail -3 "$out/$v.greedy.err"; }
done
# trained weights: 1 rank trains 20 steps and saves; pp 2 x tp 2 generates from the checkpoint as the reference does
mpi_job 120 1 "$out/r1/launch" --steps 20 --save "$out/ckpt" >"$out/train.out" 2>"$out/train.err" ||
  { bad "training r1 with --save"; tail -3 "$out/train.err"; }
got=$(gen pp2tp2 trained --max-new-tokens 16 --weights "$out/ckpt") want=$("$reference" "$out/r1.pipe" 5,17,300,42 16 "$out/ckpt")
[ -n "$got" ] && [ "$got" = "$want" ] && [ "$got" != "$(echo "$ref" | cut -d' ' -f1-16)" ] &&
  ok "trained weights (--weights CKPT): pp 2 x tp 2 generates the reference executor's tokens ($got)" ||
  { bad "trained weights: '$got' vs the reference's '$want'"; tail -3 "$out/pp2tp2.trained.err"; }
# a model with an infer section and no train section: its programs only generate, without --generate, holding the parameters alone
awk '/^train \{/ { skip = 1 } !skip { print } skip && /^\}/ { skip = 0 }' "$tiny" >"$out/inferonly.pipe"
grep -q "^train" "$out/inferonly.pipe" && bad "inferonly.pipe still trains"
"$pipec" "$out/inferonly.pipe" -o "$out/inferonly" >"$out/inferonly.log" 2>&1 || { bad "an infer-only model compiles"; cat "$out/inferonly.log"; }
grep -q "generation only; memory 0.3 MiB" "$out/inferonly.log" && ok "an infer-only build holds its parameters alone" || bad "infer-only build: $(grep 'stage0:' "$out/inferonly.log")"
got=$(mpi_job 120 4 "$out/inferonly/launch" --prompt-ids 5,17,300,42 --ids --max-new-tokens 12 2>"$out/inferonly.err" |
  sed -n 's/^pipec: generated ids: //p')
want=$("$reference" "$out/inferonly.pipe" 5,17,300,42 12)
[ -n "$got" ] && [ "$got" = "$want" ] && ok "an infer-only build generates without --generate, the reference's tokens" ||
  { bad "infer-only: '$got' vs '$want'"; tail -3 "$out/inferonly.err"; }
cp "$src/models/examples/oobleck-templates.pipe" "$out/oobleck.pipe"
"$pipec" "$out/oobleck.pipe" -o "$out/oobleck" >"$out/oobleck.log" 2>&1 || { bad "the template pair compiles"; cat "$out/oobleck.log"; }
got=$(gen oobleck greedy --max-new-tokens 12) want=$("$reference" "$out/oobleck.pipe" 5,17,300,42 12)
[ -n "$got" ] && [ "$got" = "$want" ] && ok "heterogeneous templates (1-stage + 2-stage pipelines): the reference executor's tokens" ||
  { bad "templates: '$got' vs '$want'"; tail -3 "$out/oobleck.greedy.err"; }
sref=$(gen r1 topk --max-new-tokens 16 --sampling top_k:20 --temperature 1.5 --seed 7)
sgot=$(gen pp2tp2 topk --max-new-tokens 16 --sampling top_k:20 --temperature 1.5 --seed 7)
[ -n "$sref" ] && [ "$sref" = "$sgot" ] && ok "top-k sampling with a seed: pp 2 x tp 2 equals 1 rank" || bad "top-k: '$sgot' vs '$sref'"
pref=$(gen r1 topp --max-new-tokens 16 --sampling top_p:0.9 --seed 7)
pgot=$(gen pp2tp2 topp --max-new-tokens 16 --sampling top_p:0.9 --seed 7)
[ -n "$pref" ] && [ "$pref" = "$pgot" ] && ok "top-p sampling: pp 2 x tp 2 equals 1 rank" || bad "top-p: '$pgot' vs '$pref'"
bref=$(gen beam-r1 beam --max-new-tokens 12 --sampling beam:3)
bgot=$(gen beam-pp2tp2 beam --max-new-tokens 12 --sampling beam:3)
[ "$(echo "$bref" | wc -w)" -eq 12 ] && [ "$bref" = "$bgot" ] && ok "beam search (3 beams): pp 2 x tp 2 equals 1 rank ($bref)" ||
  { bad "beam: '$bgot' vs '$bref'"; tail -3 "$out/beam-r1.beam.err" "$out/beam-pp2tp2.beam.err"; }

# 2. seeds
s2=$(gen r1 topk2 --max-new-tokens 16 --sampling top_k:20 --temperature 1.5 --seed 8)
[ -n "$s2" ] && [ "$s2" != "$sref" ] && ok "another seed samples other tokens" || bad "seed 8 gave '$s2' (seed 7: '$sref')"
s3=$(gen r1 topk3 --max-new-tokens 16 --sampling top_k:20 --temperature 1.5 --seed 7)
[ "$s3" = "$sref" ] && ok "the same seed samples the same tokens" || bad "seed 7 twice: '$s3' vs '$sref'"

# 3. errors
gen r1 badid --prompt-ids 5,9999 >/dev/null
grep -q "not a list of token ids below 512" "$out/r1.badid.err" && ok "a prompt id outside the vocabulary is refused" || { bad "bad id"; cat "$out/r1.badid.err"; }
gen r1 beams --sampling beam:4 >/dev/null
grep -q "decodes 1 beam at a time.*beam(4)" "$out/r1.beams.err" && ok "a beam count the build lacks is refused" || { bad "beams"; cat "$out/r1.beams.err"; }
gen r1 opt --bogus 1 >/dev/null
grep -q "unknown generation option '--bogus'" "$out/r1.opt.err" && ok "an unknown option is refused" || { bad "option"; cat "$out/r1.opt.err"; }

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
