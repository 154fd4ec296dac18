#!/bin/sh
# data_tokenize.sh PIPEC SRC TOKENIZER_DIR OUT — `pipec tokenize`.
#
#  1. This repository's docs and README with --vocab-size 512: an llm.c
#     token file (magic, version, count = the file's tokens) whose ids are
#     all below 512, and --decode gives the text back byte for byte.
#  2. --vocab-size 512 is GPT-2's BPE with its first 256 merges: the same
#     ids as the full encoder.json with vocab.bpe cut to 256 merges (whose
#     files also put <|endoftext|> before each document; those are dropped).
#  3. Errors: a vocabulary larger than the tokenizer's, a missing text file,
#     a token file decoded with too small a vocabulary (the id named).
set -u
pipec=$1 src=$2 tok=$3 out=$4
pass=0 fail=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1"; fail=$((fail + 1)); }
rm -rf "$out" && mkdir -p "$out"
ids() { od -An -v -tu2 -j1024 "$1" | tr -s ' ' '\n' | grep -v '^$'; }

# 1. round trip
set -- "$src"/docs/*.md "$src/README.md"
cat "$@" >"$out/text"
"$pipec" tokenize --tokenizer "$tok" --vocab-size 512 "$@" -o "$out/docs.bin" >"$out/log" 2>&1 &&
  ok "tokenize: $(cat "$out/log")" || { bad "tokenize failed: $(cat "$out/log")"; exit 1; }
n=$(ids "$out/docs.bin" | wc -l)
hdr=$(od -An -v -td4 -N12 "$out/docs.bin" | tr -s ' ' ' ')
[ "$hdr" = " 20240520 1 $n" ] && [ "$(stat -c %s "$out/docs.bin")" -eq $((1024 + 2 * n)) ] &&
  ok "an llm.c header: magic, version 1, $n tokens" || bad "header '$hdr' for $n tokens"
max=$(ids "$out/docs.bin" | sort -n | tail -1)
[ "$max" -lt 512 ] && [ "$max" -ge 256 ] && ok "every id below 512 (largest $max, merges used)" || bad "largest id $max"
"$pipec" tokenize --tokenizer "$tok" --vocab-size 512 --decode "$out/docs.bin" -o "$out/back" 2>"$out/err" &&
  cmp -s "$out/text" "$out/back" && ok "decode(encode(text)) == text ($(wc -c <"$out/text") bytes)" || { bad "round trip"; cat "$out/err"; }

# 2. the same as GPT-2's files with 256 merges
mkdir -p "$out/cut"
cp "$tok/encoder.json" "$out/cut/encoder.json"
head -n 257 "$tok/vocab.bpe" >"$out/cut/vocab.bpe"
"$pipec" tokenize --tokenizer "$out/cut" "$@" -o "$out/cut.bin" >/dev/null 2>"$out/err" || { bad "256 merges: $(cat "$out/err")"; }
ids "$out/cut.bin" | grep -vx 50256 >"$out/cut.ids"
ids "$out/docs.bin" >"$out/docs.ids"
[ "$(ids "$out/cut.bin" | grep -cx 50256)" -eq $# ] &&
  cmp -s "$out/cut.ids" "$out/docs.ids" && ok "--vocab-size 512 = vocab.bpe cut to its first 256 merges" || bad "limited ids differ from 256 merges"

# 3. errors
"$pipec" tokenize --tokenizer "$tok" --vocab-size 60000 "$1" -o "$out/x.bin" 2>"$out/err"
[ $? -eq 1 ] && grep -q "60000 tokens is not in 256..50257" "$out/err" && [ ! -e "$out/x.bin" ] && ok "a vocabulary beyond the tokenizer's: $(cat "$out/err")" ||
  bad "vocab 60000: $(cat "$out/err")"
"$pipec" tokenize --tokenizer "$tok" "$out/missing.txt" -o "$out/x.bin" 2>"$out/err"
[ $? -eq 1 ] && grep -q "cannot read .*missing.txt" "$out/err" && [ ! -e "$out/x.bin" ] && ok "a missing text file: $(cat "$out/err")" ||
  bad "missing file: $(cat "$out/err")"
"$pipec" tokenize --tokenizer "$tok" --vocab-size 300 --decode "$out/docs.bin" >/dev/null 2>"$out/err"
[ $? -eq 1 ] && grep -q "is [0-9]*, outside the vocabulary 0..299 (.*docs.bin)" "$out/err" && ok "decoding with too small a vocabulary: $(cat "$out/err")" ||
  bad "decode 300: $(cat "$out/err")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
