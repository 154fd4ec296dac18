/* schedule_io.c — schedules in and out: plain text, PyTorch's CSV, a
 * terminal grid and an SVG Gantt chart. See schedule_io.h. No libm. */
#include "lib/schedule_io.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lib/xalloc.h"

#define ACT_BUF 64

static double io_abs(double x) { return x < 0 ? -x : x; }
static long io_round(double x) { return x < 0 ? -(long)(-x + 0.5) : (long)(x + 0.5); }
static int is_compute(int k) { return k == ACT_F || k == ACT_B || k == ACT_I || k == ACT_W; }
static const char *plural(long n, const char *one, const char *many) { return n == 1 ? one : many; }

/* ------------------------------------------------------------------ text */

void schedule_print_text(FILE *out, const Schedule *s) {
  fprintf(out, "# pipec schedule: %d %s, %d %s, %d %s\n", s->nranks, plural(s->nranks, "rank", "ranks"), s->nstages,
          plural(s->nstages, "stage", "stages"), s->nmb, plural(s->nmb, "microbatch", "microbatches"));
  fprintf(out, "# stage -> rank:");
  for (int st = 0; st < s->nstages; st++) fprintf(out, " %d->%d", st, s->stage_rank[st]);
  fputc('\n', out);
  char buf[ACT_BUF];
  for (int r = 0; r < s->nranks; r++) {
    fprintf(out, "rank %d:", r);
    for (int i = 0; i < s->rank[r].n; i++) {
      action_format(buf, sizeof buf, s->rank[r].a[i]);
      fprintf(out, " %s", buf);
    }
    fputc('\n', out);
  }
}

/* ------------------------------------------------------------------- CSV */

void schedule_write_csv(FILE *out, const Schedule *s) {
  char buf[ACT_BUF];
  for (int r = 0; r < s->nranks; r++) {
    for (int i = 0; i < s->rank[r].n; i++) {
      action_format(buf, sizeof buf, s->rank[r].a[i]);
      if (i) fputc(',', out);
      fputs(buf, out); /* action strings hold no comma, quote or line end: csv.writer leaves them bare */
    }
    fputs("\r\n", out);
  }
}

typedef struct CsvCell {
  int row, col; /* 0-based */
  size_t off, len; /* into the cell text buffer, whitespace stripped */
} CsvCell;

typedef struct CsvRow {
  int first, n;  /* cells */
  int nonblank;  /* cells with text */
} CsvRow;

typedef struct Csv {
  char *buf; /* cell texts, each NUL-terminated */
  size_t used;
  CsvCell *cell;
  int ncell, capcell;
  CsvRow *row;
  int nrow, caprow;
} Csv;

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static int csv_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

static void csv_emit(Csv *c, size_t start, int row, int col) {
  /* strip the text collected since `start` (Python's str.strip, as _Action.from_str does) */
  size_t a = start, b = c->used;
  while (a < b && csv_space(c->buf[a])) a++;
  while (b > a && csv_space(c->buf[b - 1])) b--;
  c->buf[c->used++] = '\0';
  c->buf[b] = '\0';
  if (c->ncell == c->capcell) {
    c->capcell = c->capcell ? c->capcell * 2 : 64;
    c->cell = xrealloc(c->cell, (size_t)c->capcell, sizeof(CsvCell));
  }
  c->cell[c->ncell++] = (CsvCell){row, col, a, b - a};
  if (row == c->nrow) {
    if (c->nrow == c->caprow) {
      c->caprow = c->caprow ? c->caprow * 2 : 16;
      c->row = xrealloc(c->row, (size_t)c->caprow, sizeof(CsvRow));
    }
    c->row[c->nrow++] = (CsvRow){c->ncell - 1, 0, 0};
  }
  c->row[row].n++;
  if (b > a) c->row[row].nonblank++;
}

/* Splits text into rows of cells (RFC 4180 with Python csv's leniency). */
static int csv_split(Csv *c, const char *text, size_t len, char *err, size_t errlen) {
  size_t pos = 0;
  if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) pos = 3;
  c->buf = xcalloc(2 * len + 2, 1);
  int row = 0, col = 0;
  while (pos < len) {
    size_t start = c->used;
    /* one field */
    size_t q = pos;
    while (q < len && (text[q] == ' ' || text[q] == '\t')) q++;
    if (q < len && text[q] == '"') {
      pos = q + 1;
      for (;;) {
        if (pos >= len) {
          seterr(err, errlen, "row %d, column %d: a quoted cell is not closed", row + 1, col + 1);
          return -1;
        }
        if (text[pos] == '"') {
          if (pos + 1 < len && text[pos + 1] == '"') {
            c->buf[c->used++] = '"';
            pos += 2;
            continue;
          }
          pos++;
          break;
        }
        c->buf[c->used++] = text[pos++];
      }
    }
    /* unquoted text, or what follows a closing quote (kept, as Python does) */
    while (pos < len && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r') c->buf[c->used++] = text[pos++];
    csv_emit(c, start, row, col);
    if (pos < len && text[pos] == ',') {
      pos++, col++;
      if (pos == len) csv_emit(c, c->used, row, col); /* trailing comma at the very end */
      continue;
    }
    if (pos < len && text[pos] == '\r') pos++;
    if (pos < len && text[pos] == '\n') pos++;
    row++, col = 0;
  }
  return 0;
}

/* 'text' for a message: at most 40 characters, unprintable bytes as '?'. */
static const char *shown(const char *t, size_t n, char *out, size_t outlen) {
  size_t k = 0, lim = n > 40 ? 37 : n;
  for (size_t i = 0; i < lim && k + 1 < outlen; i++) {
    unsigned char ch = (unsigned char)t[i];
    out[k++] = ch < 32 || ch == 127 ? '?' : (char)ch;
  }
  for (size_t i = 0; n > 40 && i < 3 && k + 1 < outlen; i++) out[k++] = '.';
  out[k] = '\0';
  return out;
}

#define MAX_INFERRED 65536 /* stages or microbatches pipec will infer from a file */

Schedule *schedule_read_csv(const char *text, size_t len, int nstages, int nmb, const int *stage_rank, char *err,
                            size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (!text) len = 0;
  if (stage_rank && nstages <= 0) {
    seterr(err, errlen, "the plan has no stages");
    return NULL;
  }
  int plan_ranks = 0;
  for (int st = 0; stage_rank && st < nstages; st++) {
    if (stage_rank[st] < 0) {
      seterr(err, errlen, "the plan puts stage %d on rank %d", st, stage_rank[st]);
      return NULL;
    }
    if (stage_rank[st] + 1 > plan_ranks) plan_ranks = stage_rank[st] + 1;
  }

  Csv c = {0};
  Schedule *s = NULL;
  Action *act = NULL;
  unsigned char *has = NULL;
  int *owner = NULL;
  if (csv_split(&c, text ? text : "", len, err, errlen)) goto done;

  int used_rows = c.nrow;
  while (used_rows > 0 && c.row[used_rows - 1].nonblank == 0) used_rows--;
  if (used_rows == 0) {
    seterr(err, errlen, "the schedule is empty");
    goto done;
  }
  if (stage_rank) {
    /* trailing blank rows count as ranks without actions when the plan needs them */
    if (used_rows > plan_ranks || c.nrow < plan_ranks) {
      seterr(err, errlen, "the schedule has %d %s, but the plan has %d %s (one row per rank)", used_rows,
             plural(used_rows, "row", "rows"), plan_ranks, plural(plan_ranks, "rank", "ranks"));
      goto done;
    }
    used_rows = plan_ranks;
  }

  /* parse and check each cell */
  act = xcalloc((size_t)c.ncell, sizeof(Action));
  has = xcalloc((size_t)c.ncell, 1);
  int owner_cap = stage_rank ? 0 : (nstages > 0 ? nstages : 16);
  if (!stage_rank) {
    owner = xcalloc((size_t)owner_cap, sizeof(int));
    for (int i = 0; i < owner_cap; i++) owner[i] = -1;
  }
  int max_stage = -1, max_mb = -1;
  char sh[48];
  for (int k = 0; k < c.ncell; k++) {
    CsvCell *e = &c.cell[k];
    if (e->row >= used_rows || e->len == 0) continue;
    const char *t = c.buf + e->off;
    shown(t, e->len, sh, sizeof sh);
    Action a;
    if (strlen(t) != e->len || action_parse(t, &a) != 0) {
      seterr(err, errlen, "row %d, column %d: '%s' is not an action (expected e.g. 0F1, 1SEND_F1)", e->row + 1,
             e->col + 1, sh);
      goto done;
    }
    if (a.stage >= 0) {
      int limit = stage_rank || nstages > 0 ? nstages : MAX_INFERRED;
      if (a.stage >= limit) {
        if (stage_rank || nstages > 0)
          seterr(err, errlen, "row %d, column %d: '%s': there is no stage %d; stages are 0 to %d", e->row + 1,
                 e->col + 1, sh, a.stage, nstages - 1);
        else
          seterr(err, errlen, "row %d, column %d: '%s': stage %d is too large (at most %d stages)", e->row + 1,
                 e->col + 1, sh, a.stage, MAX_INFERRED);
        goto done;
      }
    }
    if (a.mb >= 0) {
      int limit = nmb > 0 ? nmb : MAX_INFERRED;
      if (a.mb >= limit) {
        if (nmb > 0)
          seterr(err, errlen, "row %d, column %d: '%s': there is no microbatch %d; microbatches are 0 to %d",
                 e->row + 1, e->col + 1, sh, a.mb, nmb - 1);
        else
          seterr(err, errlen, "row %d, column %d: '%s': microbatch %d is too large (at most %d microbatches)",
                 e->row + 1, e->col + 1, sh, a.mb, MAX_INFERRED);
        goto done;
      }
      if (a.mb > max_mb) max_mb = a.mb;
    }
    if (a.stage >= 0) {
      if (a.stage > max_stage) max_stage = a.stage;
      if (stage_rank) {
        int want = stage_rank[a.stage];
        if (want != e->row) {
          seterr(err, errlen, "row %d, column %d: '%s': stage %d runs on rank %d (row %d), not on rank %d", e->row + 1,
                 e->col + 1, sh, a.stage, want, want + 1, e->row);
          goto done;
        }
      } else {
        if (a.stage >= owner_cap) {
          int nc = owner_cap;
          while (nc <= a.stage) nc *= 2;
          owner = xrealloc(owner, (size_t)nc, sizeof(int));
          for (int i = owner_cap; i < nc; i++) owner[i] = -1;
          owner_cap = nc;
        }
        if (owner[a.stage] >= 0 && owner[a.stage] != e->row) {
          seterr(err, errlen, "row %d, column %d: '%s': stage %d is already on row %d; a stage runs on one rank",
                 e->row + 1, e->col + 1, sh, a.stage, owner[a.stage] + 1);
          goto done;
        }
        owner[a.stage] = e->row;
      }
    }
    act[k] = a;
    has[k] = 1;
  }

  int S = stage_rank || nstages > 0 ? nstages : max_stage + 1;
  int M = nmb > 0 ? nmb : max_mb + 1;
  if (!stage_rank) {
    if (S <= 0) {
      seterr(err, errlen, "the schedule names no stage");
      goto done;
    }
    for (int st = 0; st < S; st++)
      if (st >= owner_cap || owner[st] < 0) {
        seterr(err, errlen, "stage %d is on no row, so its rank is unknown", st);
        goto done;
      }
  }
  s = schedule_new(used_rows, S, M < 0 ? 0 : M, stage_rank ? stage_rank : owner);
  for (int k = 0; k < c.ncell; k++)
    if (has[k]) schedule_push(s, c.cell[k].row, act[k]);

done:
  free(owner);
  free(has);
  free(act);
  free(c.buf);
  free(c.cell);
  free(c.row);
  return s;
}

/* ------------------------------------------------------------ shared view */

typedef struct View {
  const Schedule *s;
  const SimResult *r;
  int timed;
  int *multi;     /* per rank: holds several stages */
  double eps;
} View;

static void view_init(View *v, const Schedule *s, const SimResult *r) {
  v->s = s;
  v->r = r;
  v->timed = r && r->ok && r->start && r->end && r->nranks == s->nranks;
  v->multi = xcalloc((size_t)(s->nranks > 0 ? s->nranks : 1), sizeof(int));
  int *cnt = xcalloc((size_t)(s->nranks > 0 ? s->nranks : 1), sizeof(int));
  for (int st = 0; st < s->nstages; st++)
    if (s->stage_rank[st] >= 0 && s->stage_rank[st] < s->nranks) cnt[s->stage_rank[st]]++;
  for (int rk = 0; rk < s->nranks; rk++) v->multi[rk] = cnt[rk] > 1;
  free(cnt);
  double T = v->timed && r->step_time > 0 ? r->step_time : 1;
  v->eps = 1e-9 * T;
}

static void view_free(View *v) { free(v->multi); }

/* "F3" or, on a rank holding several stages, "2F3"; "TIED_ALLREDUCE" etc. as is. */
static int short_label(const View *v, int rank, Action a, char *buf, size_t n) {
  if (is_compute(a.kind) && !v->multi[rank]) return snprintf(buf, n, "%s%d", act_names[a.kind], a.mb);
  return action_format(buf, n, a);
}

/* ------------------------------------------------------------------- grid */

#define GRID_WIDTH 200
#define GRID_MAX_QUANTA 4096

static const int ansi_fg[] = {34, 33, 31, 36, 32, 35, 94, 93, 91, 96, 92, 95};
#define NANSI ((int)(sizeof ansi_fg / sizeof ansi_fg[0]))

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void style_on(FILE *out, Action a) {
  int fg = ansi_fg[(a.stage < 0 ? 0 : a.stage) % NANSI];
  if (a.kind == ACT_F) fprintf(out, "\033[%dm", fg);
  else if (a.kind == ACT_W) fprintf(out, "\033[2;%dm", fg);
  else fprintf(out, "\033[30;%dm", fg + 10); /* B, I: on the stage's colour */
}

void schedule_print_grid(FILE *out, const Schedule *s, const SimResult *r, int color) {
  View v;
  view_init(&v, s, r);
  int P = s->nranks;

  /* label width */
  int w = 2;
  char lab[ACT_BUF];
  for (int rk = 0; rk < P; rk++)
    for (int i = 0; i < s->rank[rk].n; i++)
      if (is_compute(s->rank[rk].a[i].kind)) {
        int l = short_label(&v, rk, s->rank[rk].a[i], lab, sizeof lab);
        if (l > w) w = l;
      }

  /* columns */
  int mode = 0; /* 0 untimed, 1 quantum, 2 distinct starts */
  double q = 0, *times = NULL;
  long ncols = 0;
  if (v.timed) {
    double dmin = 0, maxend = 0;
    int all_pos = 1, any = 0;
    for (int rk = 0; rk < P; rk++)
      for (int i = 0; i < s->rank[rk].n; i++) {
        if (!is_compute(s->rank[rk].a[i].kind)) continue;
        double d = r->end[rk][i] - r->start[rk][i];
        if (d <= v.eps) all_pos = 0;
        else if (!any || d < dmin) dmin = d;
        if (r->end[rk][i] > maxend) maxend = r->end[rk][i];
        any = 1;
      }
    if (any && all_pos && dmin > 0 && maxend / dmin <= GRID_MAX_QUANTA) {
      int aligned = 1;
      for (int rk = 0; rk < P && aligned; rk++)
        for (int i = 0; i < s->rank[rk].n && aligned; i++) {
          if (!is_compute(s->rank[rk].a[i].kind)) continue;
          double a = r->start[rk][i] / dmin, b = r->end[rk][i] / dmin;
          if (io_abs(a - (double)io_round(a)) > 1e-6 || io_abs(b - (double)io_round(b)) > 1e-6) aligned = 0;
        }
      if (aligned) mode = 1, q = dmin, ncols = io_round(maxend / dmin);
    }
    if (!mode) {
      mode = 2;
      long n = 0;
      for (int rk = 0; rk < P; rk++) n += s->rank[rk].n;
      times = xcalloc((size_t)n, sizeof(double));
      n = 0;
      for (int rk = 0; rk < P; rk++)
        for (int i = 0; i < s->rank[rk].n; i++)
          if (is_compute(s->rank[rk].a[i].kind)) times[n++] = r->start[rk][i];
      qsort(times, (size_t)n, sizeof(double), cmp_double);
      for (long i = 0; i < n; i++)
        if (ncols == 0 || times[i] - times[ncols - 1] > v.eps) times[ncols++] = times[i];
    }
  } else {
    for (int rk = 0; rk < P; rk++) {
      long n = 0;
      for (int i = 0; i < s->rank[rk].n; i++) n += is_compute(s->rank[rk].a[i].kind);
      if (n > ncols) ncols = n;
    }
  }

  /* cells: action index per (rank, column), and whether it starts there */
  size_t ncell = (size_t)P * (size_t)(ncols > 0 ? ncols : 1);
  int *cell = xcalloc(ncell, sizeof(int));
  unsigned char *cont = xcalloc(ncell, 1);
  for (size_t k = 0; k < ncell; k++) cell[k] = -1;
  for (int rk = 0; rk < P; rk++) {
    long col = 0;
    for (int i = 0; i < s->rank[rk].n; i++) {
      if (!is_compute(s->rank[rk].a[i].kind)) continue;
      long c0, c1;
      if (mode == 0) c0 = col++, c1 = c0 + 1;
      else if (mode == 1) c0 = io_round(r->start[rk][i] / q), c1 = io_round(r->end[rk][i] / q);
      else {
        long lo = 0, hi = ncols - 1; /* the column of this start */
        while (lo < hi) {
          long mid = (lo + hi) / 2;
          if (times[mid] < r->start[rk][i] - v.eps) lo = mid + 1;
          else hi = mid;
        }
        c0 = lo;
        for (c1 = c0 + 1; c1 < ncols && times[c1] < r->end[rk][i] - v.eps; c1++) {}
      }
      for (long c = c0; c < c1 && c < ncols; c++) {
        size_t k = (size_t)rk * (size_t)ncols + (size_t)c;
        if (cell[k] >= 0 && c > c0) continue; /* never hide a start under a continuation */
        cell[k] = i;
        cont[k] = c > c0;
      }
    }
  }

  /* header */
  char head[GRID_WIDTH + 1];
  if (mode == 1) snprintf(head, sizeof head, "one column = %g time %s", q, q == 1 ? "unit" : "units");
  else if (mode == 2) snprintf(head, sizeof head, "one column per distinct start time (not to scale)");
  else snprintf(head, sizeof head, "untimed: compute actions in order%s%.100s", r && !r->ok && r->error[0] ? "; " : "",
                r && !r->ok ? r->error : "");
  fprintf(out, "# pipec grid: %d %s, %d %s, %d %s; %s\n", P, plural(P, "rank", "ranks"), s->nstages,
          plural(s->nstages, "stage", "stages"), s->nmb, plural(s->nmb, "microbatch", "microbatches"), head);
  fprintf(out, "# '.' idle, '-' the action to the left goes on\n");

  int rdig = snprintf(NULL, 0, "%d", P > 0 ? P - 1 : 0);
  int prefix = 5 + rdig + 3;             /* "rank 12 | " */
  int suffix = v.timed ? 34 : 0;         /* " | bubble 100.0% | in-flight 123" */
  long per = (GRID_WIDTH - prefix - suffix) / (w + 1);
  if (per < 1) per = 1;
  char *ruler = xcalloc((size_t)GRID_WIDTH + 64, 1);
  for (long b0 = 0; b0 < ncols || (b0 == 0 && ncols == 0); b0 += per) {
    long b1 = b0 + per < ncols ? b0 + per : ncols;
    int last = b1 >= ncols;
    if (b0 > 0) fputc('\n', out);
    /* ruler: the time (or step) of a column where its label fits */
    int rl = prefix;
    memset(ruler, ' ', (size_t)GRID_WIDTH + 63);
    memcpy(ruler, mode ? "time" : "step", 4);
    int free_at = prefix;
    for (long c = b0; c < b1; c++) {
      int at = prefix + (int)(c - b0) * (w + 1);
      if (at < free_at) continue;
      char t[40];
      int tl = mode == 1 ? snprintf(t, sizeof t, "%g", (double)c * q)
               : mode == 2 ? snprintf(t, sizeof t, "%g", times[c])
                           : snprintf(t, sizeof t, "%ld", c + 1);
      if (at + tl > GRID_WIDTH) break;
      memcpy(ruler + at, t, (size_t)tl);
      free_at = at + tl + 1;
      rl = at + tl;
    }
    fprintf(out, "%.*s\n", rl, ruler);
    for (int rk = 0; rk < P; rk++) {
      fprintf(out, "rank %*d | ", rdig, rk);
      for (long c = b0; c < b1; c++) {
        size_t k = (size_t)rk * (size_t)ncols + (size_t)c;
        int i = cell[k];
        int next_same = c + 1 < b1 && i >= 0 && cell[k + 1] == i && cont[k + 1];
        if (i < 0) {
          fprintf(out, "%-*s", w, ".");
          if (c + 1 < b1) fputc(' ', out);
          continue;
        }
        Action a = s->rank[rk].a[i];
        int bar = color && (a.kind == ACT_B || a.kind == ACT_I);
        if (color) style_on(out, a);
        if (cont[k]) {
          for (int j = 0; j < w; j++) fputc(bar ? ' ' : '-', out);
        } else {
          int l = short_label(&v, rk, a, lab, sizeof lab);
          fputs(lab, out);
          for (int j = l; j < w; j++) fputc(next_same && !bar ? '-' : ' ', out);
        }
        if (next_same) fputc(bar ? ' ' : '-', out);
        if (color) fputs("\033[0m", out);
        if (!next_same && c + 1 < b1) fputc(' ', out);
      }
      if (last && v.timed) fprintf(out, " | bubble %5.1f%% | in-flight %d", 100.0 * r->bubble[rk], r->peak_inflight[rk]);
      fputc('\n', out);
    }
    if (ncols == 0) break;
  }
  if (v.timed)
    fprintf(out, "step time %g, mean bubble %.1f%%, peak in-flight %d\n", r->step_time, 100.0 * r->bubble_mean,
            r->peak_inflight_max);
  free(ruler);
  free(cell);
  free(cont);
  free(times);
  view_free(&v);
}

/* -------------------------------------------------------------------- SVG */

static void svg_text(FILE *out, const char *t) {
  for (; *t; t++) {
    switch (*t) {
    case '&': fputs("&amp;", out); break;
    case '<': fputs("&lt;", out); break;
    case '>': fputs("&gt;", out); break;
    case '"': fputs("&quot;", out); break;
    case '\'': fputs("&apos;", out); break;
    default:
      /* XML 1.0 has no place for other control characters */
      if ((unsigned char)*t < 32 && *t != '\t' && *t != '\n' && *t != '\r') fputc('?', out);
      else fputc(*t, out);
    }
  }
}

/* Tableau 10 */
static const unsigned palette[] = {0x4e79a7, 0xf28e2b, 0xe15759, 0x76b7b2, 0x59a14f,
                                   0xedc948, 0xb07aa1, 0xff9da7, 0x9c755f, 0xbab0ac};
#define NPAL ((int)(sizeof palette / sizeof palette[0]))

/* c mixed toward white (t > 0) or black (t < 0) */
static void hex(char *buf, unsigned c, double t) {
  int rgb[3] = {(int)(c >> 16) & 255, (int)(c >> 8) & 255, (int)c & 255};
  for (int i = 0; i < 3; i++) {
    double x = rgb[i];
    x = t >= 0 ? x + (255 - x) * t : x * (1 + t);
    rgb[i] = (int)(x + 0.5);
  }
  snprintf(buf, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

static double nice_step(double range, int want) {
  double raw = range / want, p = 1;
  if (raw <= 0) return 1;
  while (p * 10 <= raw) p *= 10;
  while (p > raw) p /= 10;
  static const double m[] = {1, 2, 5, 10};
  for (int i = 0; i < 4; i++)
    if (p * m[i] >= raw) return p * m[i];
  return p * 10;
}

int schedule_write_svg(FILE *out, const Schedule *s, const SimResult *r, const char *title) {
  if (!r || !r->ok || !r->start || !r->end || r->nranks != s->nranks) return -1;
  View v;
  view_init(&v, s, r);
  int P = s->nranks, S = s->nstages;
  if (!title) title = "pipec schedule";
  double T = r->step_time > 0 ? r->step_time : 1;

  double dmin = 0;
  for (int rk = 0; rk < P; rk++)
    for (int i = 0; i < s->rank[rk].n; i++) {
      double d = r->end[rk][i] - r->start[rk][i];
      if (is_compute(s->rank[rk].a[i].kind) && d > v.eps && (dmin == 0 || d < dmin)) dmin = d;
    }
  if (dmin <= 0) dmin = T;
  double plot_w = T / dmin * 36;
  if (plot_w < 480) plot_w = 480;
  if (plot_w > 1600) plot_w = 1600;
  double xs = plot_w / T;

  const double left = 64, right = 64, row_h = 24, row_gap = 8, top = 64, char_w = 6.6;
  double plot_h = P * (row_h + row_gap);
  double axis_y = top + plot_h;

  /* summary */
  size_t sumcap = 160 + (size_t)P * 12;
  char *summary = xcalloc(sumcap, 1);
  int sl = snprintf(summary, sumcap, "step time %g | mean bubble %.1f%% | peak in-flight per rank:", r->step_time,
                    100.0 * r->bubble_mean);
  for (int rk = 0; rk < P && sl > 0 && (size_t)sl < sumcap; rk++)
    sl += snprintf(summary + sl, sumcap - (size_t)sl, " %d", r->peak_inflight[rk]);

  /* legend: the kinds, then a swatch per stage, wrapped */
  double width = left + plot_w + right;
  double need = 20 + 9.0 * (double)strlen(title);
  if (need > width) width = need;
  need = 20 + 7.0 * (double)strlen(summary);
  if (need > width) width = need;
  const double sw = 14, item_w = 86;
  double leg_y = axis_y + 44;
  int per_line = (int)((width - left) / item_w);
  if (per_line < 1) per_line = 1;
  int stage_lines = (S + per_line - 1) / per_line;
  double height = leg_y + 22 + stage_lines * 20 + 12;

  fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
  fprintf(out,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" height=\"%.0f\" "
          "viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n",
          width, height, width, height);
  fprintf(out, "<title>");
  svg_text(out, title);
  fprintf(out, "</title>\n<defs>\n");
  int npat = S < NPAL ? S : NPAL;
  for (int k = 0; k <= npat; k++) {
    char tint[8], base[8];
    unsigned c = k < npat ? palette[k] : 0x888888; /* the last: grey, for the legend */
    hex(tint, c, 0.7);
    hex(base, c, 0);
    if (k < npat) fprintf(out, "<pattern id=\"w%d\"", k);
    else fprintf(out, "<pattern id=\"wkey\"");
    fprintf(out,
            " patternUnits=\"userSpaceOnUse\" width=\"6\" height=\"6\" patternTransform=\"rotate(45)\">"
            "<rect width=\"6\" height=\"6\" fill=\"%s\"/><rect width=\"2.5\" height=\"6\" fill=\"%s\"/></pattern>\n",
            tint, base);
  }
  fprintf(out, "</defs>\n");
  fprintf(out, "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
  fprintf(out, "<text x=\"%.1f\" y=\"26\" font-size=\"16\" font-weight=\"bold\" fill=\"#222\">", left);
  svg_text(out, title);
  fprintf(out, "</text>\n<text x=\"%.1f\" y=\"46\" font-size=\"12\" fill=\"#444\">", left);
  svg_text(out, summary);
  fprintf(out, "</text>\n");

  /* ticks and grid lines */
  double step = nice_step(T, (int)(plot_w / 80) > 2 ? (int)(plot_w / 80) : 2);
  fprintf(out, "<g font-size=\"11\" fill=\"#555\" text-anchor=\"middle\">\n");
  for (long k = 0;; k++) {
    double t = (double)k * step;
    if (t > T * (1 + 1e-9)) break;
    double x = left + t * xs;
    fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", x, top - 4, x, axis_y);
    fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>", x, axis_y, x, axis_y + 5);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%g</text>\n", x, axis_y + 18, t);
  }
  fprintf(out, "</g>\n");
  fprintf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>\n", left, axis_y,
          left + plot_w, axis_y);
  fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\" text-anchor=\"end\">time</text>\n",
          left + plot_w, axis_y + 32);

  /* lanes and actions */
  char lab[ACT_BUF], full[ACT_BUF], fill[8];
  for (int rk = 0; rk < P; rk++) {
    double y = top + rk * (row_h + row_gap);
    fprintf(out, "<g>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\" fill=\"#222\" text-anchor=\"end\">rank %d</text>\n",
            left - 8, y + row_h / 2 + 4, rk);
    fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f3f3f3\"/>\n", left, y, plot_w,
            row_h);
    for (int i = 0; i < s->rank[rk].n; i++) {
      Action a = s->rank[rk].a[i];
      double t0 = r->start[rk][i], t1 = r->end[rk][i];
      if (t1 - t0 <= v.eps) continue; /* instantaneous: nothing to draw */
      double x = left + t0 * xs, wd = (t1 - t0) * xs;
      action_format(full, sizeof full, a);
      const char *textfill = "#222";
      if (is_compute(a.kind)) {
        int pi = (a.stage < 0 ? 0 : a.stage) % NPAL;
        unsigned c = palette[pi];
        if (a.kind == ACT_F) hex(fill, c, 0.55);
        else if (a.kind == ACT_B) hex(fill, c, 0), textfill = "#fff";
        else if (a.kind == ACT_I) hex(fill, c, -0.25), textfill = "#fff";
        if (a.kind == ACT_W) fprintf(out, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"url(#w%d)\"", x, y, wd, row_h, pi);
        else fprintf(out, "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\"", x, y, wd, row_h, fill);
        fprintf(out, " stroke=\"#ffffff\" stroke-width=\"1\"><title>rank %d: %s, %g to %g</title></rect>\n", rk, full, t0, t1);
      } else {
        fprintf(out,
                "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"#9a9a9a\"><title>rank %d: %s, %g to "
                "%g</title></rect>\n",
                x, y + row_h * 0.3, wd, row_h * 0.4, rk, full, t0, t1);
        continue;
      }
      /* the label: "0F3", else "F3" (the colour tells the stage), else none */
      snprintf(lab, sizeof lab, "%s%d", act_names[a.kind], a.mb);
      const char *l = (double)strlen(full) * char_w + 4 <= wd ? full : (double)strlen(lab) * char_w + 4 <= wd ? lab : NULL;
      if (l) {
        if (a.kind == ACT_W)
          fprintf(out,
                  "<text x=\"%.2f\" y=\"%.1f\" font-size=\"11\" font-family=\"DejaVu Sans Mono, monospace\" "
                  "text-anchor=\"middle\" fill=\"#222\" stroke=\"#ffffff\" stroke-width=\"2.5\" "
                  "paint-order=\"stroke\">%s</text>\n",
                  x + wd / 2, y + row_h / 2 + 4, l);
        else
          fprintf(out,
                  "<text x=\"%.2f\" y=\"%.1f\" font-size=\"11\" font-family=\"DejaVu Sans Mono, monospace\" "
                  "text-anchor=\"middle\" fill=\"%s\">%s</text>\n",
                  x + wd / 2, y + row_h / 2 + 4, textfill, l);
      }
    }
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#555\">%.1f%%</text>\n</g>\n", left + plot_w + 6,
            y + row_h / 2 + 4, 100.0 * r->bubble[rk]);
  }
  fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#777\">bubble</text>\n", left + plot_w + 6,
          top - 8);

  /* legend */
  fprintf(out, "<g font-size=\"11\" fill=\"#333\">\n");
  double lx = left;
  char c1[8], c2[8], c3[8];
  hex(c1, 0x888888, 0.55), hex(c2, 0x888888, 0), hex(c3, 0x888888, -0.25);
  const char *kname[] = {"F forward", "B backward", "I input grad", "W weight grad"};
  for (int k = 0; k < 4; k++) {
    if (k == 3) fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"url(#wkey)\"/>", lx, leg_y, sw, sw);
    else fprintf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\"/>", lx, leg_y, sw, sw, k == 0 ? c1 : k == 1 ? c2 : c3);
    fprintf(out, "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx + sw + 5, leg_y + 11, kname[k]);
    lx += 110;
  }
  for (int st = 0; st < S; st++) {
    double x = left + (st % per_line) * item_w, y = leg_y + 22 + (st / per_line) * 20;
    hex(c1, palette[st % NPAL], 0.55), hex(c2, palette[st % NPAL], 0);
    fprintf(out,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\"/>"
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.0f\" height=\"%.0f\" fill=\"%s\"/>"
            "<text x=\"%.1f\" y=\"%.1f\">stage %d</text>\n",
            x, y, sw / 2, sw, c1, x + sw / 2, y, sw / 2, sw, c2, x + sw + 5, y + 11, st);
  }
  fprintf(out, "</g>\n</svg>\n");
  free(summary);
  view_free(&v);
  return ferror(out) ? -1 : 0;
}
