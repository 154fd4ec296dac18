/* bpe.h — GPT-2's byte-level BPE tokenizer (encoder.py of openai/gpt-2,
 * also the npm package gpt-3-encoder and Hugging Face's GPT2Tokenizer
 * without special-token handling).
 *
 * Files: encoder.json (= vocab.json: a JSON object mapping each token,
 * spelled in GPT-2's byte alphabet, to its id) and vocab.bpe (= merges.txt:
 * one merge "left right" per line, in rank order, after a first line
 * "#version: 0.2" — a first line starting with '#' is skipped; encoder.py
 * skips line 1 whatever it holds). "\r\n" line ends are accepted.
 * bpe_load checks them: the JSON is well-formed; ids are 0..N-1, each once;
 * every key is spelled in the byte alphabet and every byte has a token;
 * every merge line is two tokens separated by one space, both in the
 * vocabulary, with their concatenation in it too, and no merge repeats.
 * Errors are one line naming the file and line ("vocab.bpe:7: ...";
 * "encoder.json:1:5231: ..." with the byte column for the JSON).
 *
 * Encoding, exactly as encoder.py:
 *  1. the text is split by GPT-2's pattern
 *       's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *     implemented by hand over UTF-8 (bpe_next_piece);
 *  2. each piece's UTF-8 bytes become single-byte tokens;
 *  3. the adjacent pair with the lowest merge rank is merged everywhere in
 *     the piece (left to right, non-overlapping), until no pair has a rank.
 * Step 3 runs in O(n log n) per piece (a heap of candidate pairs), and
 * results are cached per piece (a fixed-size table, so memory is bounded).
 * Special tokens are not recognised in text: "<|endoftext|>" encodes as
 * its characters, as encoder.py does; append bpe_eot() yourself.
 *
 * Character classes: \p{L} (Lu Ll Lt Lm Lo) and \p{N} (Nd Nl No) come from
 * full range tables generated from Unicode 14.0 (Python 3.11's
 * unicodedata), so every script is covered; characters assigned after
 * Unicode 14 count as neither. \s is Unicode White_Space (U+0009-000D,
 * U+0020, U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F,
 * U+205F, U+3000), as in Python's `regex` module. (JavaScript's \s, used by
 * gpt-3-encoder, differs on U+0085 and U+FEFF only.) Bytes that are not
 * valid UTF-8 are taken one at a time as characters of no class (like
 * punctuation), so any byte string encodes and decodes back to itself.
 *
 * Limits: one piece (e.g. a run of letters with no space) of at most
 * 2^31 - 1 bytes; ids are int32.
 *
 * Decoding concatenates the tokens' bytes; one token may hold part of a
 * UTF-8 character, so results are bytes, not necessarily valid UTF-8.
 *
 * A Bpe is not thread-safe (the encode cache); use one per thread.
 */
#ifndef PIPEC_BPE_H
#define PIPEC_BPE_H
#include <stddef.h>
#include <stdint.h>

typedef struct Bpe Bpe;

/* Loads and checks the two files. NULL and one line in err on failure. */
Bpe *bpe_load(const char *encoder_json, const char *vocab_bpe, char *err, size_t errlen);
void bpe_free(Bpe *b);
/* The tokenizer of folder dir: encoder.json + vocab.bpe there, else
 * vocab.json + merges.txt. NULL with "DIR holds neither encoder.json and
 * vocab.bpe nor vocab.json and merges.txt", or bpe_load's message. */
Bpe *bpe_load_dir(const char *dir, char *err, size_t errlen);

int bpe_vocab_size(const Bpe *b);   /* 50257 for GPT-2 (or the limit) */
int bpe_merge_count(const Bpe *b);  /* 50000 for GPT-2 */
int bpe_eot(const Bpe *b);          /* id of "<|endoftext|>" (50256), or -1 (also beyond the limit) */
/* Restricts the tokenizer to ids 0..vocab-1: encoding applies only merges
 * whose result is below vocab, decoding and bpe_token_bytes refuse ids from
 * vocab on, and bpe_vocab_size and bpe_eot follow. GPT-2's encoder.json
 * numbers the 256 byte tokens 0..255 and the result of merge r 256 + r
 * (checked for all 50000 merges), so this is GPT-2's BPE with its first
 * vocab - 256 merges: GPT-2's tokenizer for a model of vocab tokens.
 * -1 when vocab is not in 256..size or a byte's token is not below it. */
int bpe_limit_vocab(Bpe *b, int vocab, char *err, size_t errlen);
/* id of the token whose bytes are s[0..len), or -1 */
int32_t bpe_token_id(const Bpe *b, const char *s, size_t len);
/* the bytes of token id (not NUL-terminated; *len set), NULL when out of range */
const char *bpe_token_bytes(const Bpe *b, int32_t id, size_t *len);

/* Encodes len bytes of text. Returns the number of ids; *ids is a
 * malloc'ed array the caller frees (never NULL). */
size_t bpe_encode(Bpe *b, const char *text, size_t len, int32_t **ids);

/* Decodes n ids into malloc'ed bytes, NUL-terminated for convenience, with
 * the length (excluding the NUL) in *len. NULL and a message naming the
 * position when an id is out of range. */
char *bpe_decode(const Bpe *b, const int32_t *ids, size_t n, size_t *len, char *err, size_t errlen);

/* The pre-tokenizer alone: the end of the piece that starts at pos
 * (pos < len), by GPT-2's pattern above. */
size_t bpe_next_piece(const char *text, size_t len, size_t pos);

#endif
