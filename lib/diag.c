#include "diag.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void show_line(Diag *d, Loc loc) {
  const char *p = loc.file->text;
  for (int line = 1; line < loc.line && *p; p++)
    if (*p == '\n') line++;
  const char *e = p;
  while (*e && *e != '\n') e++;
  int w = (int)(e - p);
  fprintf(d->out, "%5d | %.*s\n", loc.line, w, p);
  fprintf(d->out, "      | ");
  for (int i = 1; i < loc.col && i - 1 < w; i++) fputc(p[i - 1] == '\t' ? '\t' : ' ', d->out);
  fputc('^', d->out);
  int len = loc.len;
  if (loc.col - 1 + len > w) len = w - (loc.col - 1);
  for (int i = 1; i < len; i++) fputc('~', d->out);
  fputc('\n', d->out);
}

static void vreport(Diag *d, Loc loc, const char *kind, const char *fmt, va_list ap) {
  if (loc.file)
    fprintf(d->out, "%s:%d:%d: %s: ", loc.file->path, loc.line, loc.col, kind);
  else
    fprintf(d->out, "pipec: %s: ", kind);
  vfprintf(d->out, fmt, ap);
  fputc('\n', d->out);
  if (loc.file && loc.line > 0) show_line(d, loc);
}

void diag_error(Diag *d, Loc loc, const char *fmt, ...) {
  d->errors++;
  d->last_file = loc.file;
  if (d->max_errors && d->errors > d->max_errors) {
    if (d->errors == d->max_errors + 1)
      fprintf(d->out, "pipec: too many errors (%d), stopping here\n", d->max_errors);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vreport(d, loc, "error", fmt, ap);
  va_end(ap);
}

void diag_note(Diag *d, Loc loc, const char *fmt, ...) {
  if (d->max_errors && d->errors > d->max_errors) return;
  va_list ap;
  va_start(ap, fmt);
  vreport(d, loc, "note", fmt, ap);
  va_end(ap);
}

Loc loc_span(Loc a, Loc b) {
  if (a.file == b.file && a.line == b.line && b.col >= a.col) a.len = b.col + b.len - a.col;
  return a;
}

/* Optimal string alignment distance (Damerau-Levenshtein with adjacent swaps). */
static int edit_distance(const char *a, const char *b) {
  int n = (int)strlen(a), m = (int)strlen(b);
  if (n > 64 || m > 64) return 1000;
  int dp[65][65];
  for (int i = 0; i <= n; i++) dp[i][0] = i;
  for (int j = 0; j <= m; j++) dp[0][j] = j;
  for (int i = 1; i <= n; i++)
    for (int j = 1; j <= m; j++) {
      int c = a[i - 1] == b[j - 1] ? 0 : 1;
      int v = dp[i - 1][j] + 1;
      if (dp[i][j - 1] + 1 < v) v = dp[i][j - 1] + 1;
      if (dp[i - 1][j - 1] + c < v) v = dp[i - 1][j - 1] + c;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && dp[i - 2][j - 2] + 1 < v)
        v = dp[i - 2][j - 2] + 1;
      dp[i][j] = v;
    }
  return dp[n][m];
}

const char *did_you_mean(const char *name, const char *const *cands, int n) {
  const char *best = NULL;
  int bestd = 1000;
  int len = (int)strlen(name);
  int limit = len <= 1 ? 0 : len <= 3 ? 1 : len <= 8 ? 2 : 3;
  for (int i = 0; i < n; i++) {
    if (!cands[i] || !strcmp(cands[i], name)) continue;
    int dist = edit_distance(name, cands[i]);
    if (dist < bestd) {
      bestd = dist;
      best = cands[i];
    }
  }
  return bestd <= limit ? best : NULL;
}

const char *suggest(const char *name, const char *const *cands, int n) {
  static char buf[160];
  const char *s = did_you_mean(name, cands, n);
  if (!s) return "";
  snprintf(buf, sizeof buf, "; did you mean '%s'?", s);
  return buf;
}
