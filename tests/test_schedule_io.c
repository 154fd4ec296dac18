/* test_schedule_io.c — lib/schedule_io.c: every action kind survives a CSV
 * write and read; hand-written CSV (CRLF, quotes, trailing commas, empty
 * cells, blank lines, a byte-order mark) reads as meant; each malformed
 * file is refused with its exact message; the SVG is well-formed XML with
 * a rect per compute action and an escaped title; the grid has one row per
 * rank and stays within 200 columns; the text form is as documented.
 * Links lib/schedule.c, compiler/simulate.c and lib/schedule_io.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/schedule.h"
#include "lib/schedule_io.h"
#include "tests/check.h"


/* ---- helpers ---- */

/* What a writer puts in a FILE, as a string (tmpfile: no open_memstream needed). */
static char *capture_file(FILE *f) {
  long n = ftell(f);
  rewind(f);
  char *buf = malloc((size_t)(n > 0 ? n : 0) + 1);
  size_t got = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
  buf[got] = '\0';
  fclose(f);
  return buf;
}

static char *csv_of(const Schedule *s) {
  FILE *f = tmpfile();
  schedule_write_csv(f, s);
  return capture_file(f);
}

static char *text_of(const Schedule *s) {
  FILE *f = tmpfile();
  schedule_print_text(f, s);
  return capture_file(f);
}

static char *grid_of(const Schedule *s, const SimResult *r, int color) {
  FILE *f = tmpfile();
  schedule_print_grid(f, s, r, color);
  return capture_file(f);
}

static char *svg_of(const Schedule *s, const SimResult *r, const char *title, int *rc) {
  FILE *f = tmpfile();
  *rc = schedule_write_svg(f, s, r, title);
  return capture_file(f);
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  size_t l = strlen(needle);
  for (const char *p = strstr(hay, needle); p; p = strstr(p + l, needle)) n++;
  return n;
}

static int same_schedule(const Schedule *a, const Schedule *b, char *why, size_t n) {
  if (a->nranks != b->nranks || a->nstages != b->nstages || a->nmb != b->nmb) {
    snprintf(why, n, "shape %d/%d/%d vs %d/%d/%d", a->nranks, a->nstages, a->nmb, b->nranks, b->nstages, b->nmb);
    return 0;
  }
  for (int st = 0; st < a->nstages; st++)
    if (a->stage_rank[st] != b->stage_rank[st]) {
      snprintf(why, n, "stage %d on rank %d vs %d", st, a->stage_rank[st], b->stage_rank[st]);
      return 0;
    }
  for (int r = 0; r < a->nranks; r++) {
    if (a->rank[r].n != b->rank[r].n) {
      snprintf(why, n, "rank %d: %d actions vs %d", r, a->rank[r].n, b->rank[r].n);
      return 0;
    }
    for (int i = 0; i < a->rank[r].n; i++) {
      Action x = a->rank[r].a[i], y = b->rank[r].a[i];
      if (x.kind != y.kind || x.stage != y.stage || x.mb != y.mb) {
        char bx[48], by[48];
        action_format(bx, sizeof bx, x);
        action_format(by, sizeof by, y);
        snprintf(why, n, "rank %d, action %d: %s vs %s", r, i, bx, by);
        return 0;
      }
    }
  }
  return 1;
}

/* rank r's actions as "0F0 0B0" */
static void row_text(const Schedule *s, int r, char *buf, size_t n) {
  size_t k = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->rank[r].n && k < n; i++) {
    char a[48];
    action_format(a, sizeof a, s->rank[r].a[i]);
    k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? " " : "", a);
  }
}

/* 1F1B, compute only, one stage per rank */
static Schedule *one_f_one_b(int p, int m) {
  int *sr = malloc(sizeof(int) * (size_t)p);
  placement_fill(sr, p, p, PLACE_LOOP);
  Schedule *s = schedule_new(p, p, m, sr);
  free(sr);
  for (int r = 0; r < p; r++) {
    int w = p - r - 1 < m ? p - r - 1 : m;
    for (int i = 0; i < w; i++) schedule_push(s, r, (Action){ACT_F, r, i});
    for (int i = 0; i < m - w; i++) {
      schedule_push(s, r, (Action){ACT_F, r, w + i});
      schedule_push(s, r, (Action){ACT_B, r, i});
    }
    for (int i = m - w; i < m; i++) schedule_push(s, r, (Action){ACT_B, r, i});
  }
  return s;
}

/* Two chunks per rank (loop placement), all forwards, then backwards from the
 * last stage down; the odd stages split their backward into I and W. */
static Schedule *looped_with_iw(int p, int m) {
  int S = 2 * p;
  int *sr = malloc(sizeof(int) * (size_t)S);
  placement_fill(sr, p, S, PLACE_LOOP);
  Schedule *s = schedule_new(p, S, m, sr);
  free(sr);
  for (int st = 0; st < S; st++)
    for (int mb = 0; mb < m; mb++) schedule_push(s, s->stage_rank[st], (Action){ACT_F, st, mb});
  for (int st = S - 1; st >= 0; st--)
    for (int mb = 0; mb < m; mb++) {
      if (st % 2) {
        schedule_push(s, s->stage_rank[st], (Action){ACT_I, st, mb});
        schedule_push(s, s->stage_rank[st], (Action){ACT_W, st, mb});
      } else
        schedule_push(s, s->stage_rank[st], (Action){ACT_B, st, mb});
    }
  return s;
}

/* ---- CSV round trip ---- */

static void round_trip(void) {
  Schedule *c = looped_with_iw(3, 4);
  Schedule *s = schedule_lower(c, 2, 1, 1); /* dp 2, tied first/last, optimizer step */
  int seen[ACT_COUNT] = {0};
  for (int r = 0; r < s->nranks; r++)
    for (int i = 0; i < s->rank[r].n; i++) seen[s->rank[r].a[i].kind]++;
  for (int k = 0; k < ACT_COUNT; k++) CHECK(seen[k] > 0, "the test schedule has no %s action", act_names[k]);
  SimResult sim = schedule_simulate(s, NULL, 0);
  CHECK(sim.ok, "the test schedule does not simulate: %s", sim.error);
  sim_result_free(&sim);

  const Schedule *both[] = {c, s};
  for (int which = 0; which < 2; which++) {
    const Schedule *x = both[which];
    char *csv = csv_of(x);
    char err[256], why[256];
    /* with the plan's map */
    Schedule *y = schedule_read_csv(csv, strlen(csv), x->nstages, x->nmb, x->stage_rank, err, sizeof err);
    CHECK(y != NULL, "round trip %d with the map: %s", which, err);
    if (y) CHECK(same_schedule(x, y, why, sizeof why), "round trip %d with the map: %s", which, why);
    schedule_free(y);
    /* inferring the map, then inferring stages and microbatches too */
    y = schedule_read_csv(csv, strlen(csv), x->nstages, x->nmb, NULL, err, sizeof err);
    CHECK(y != NULL, "round trip %d inferring the map: %s", which, err);
    if (y) CHECK(same_schedule(x, y, why, sizeof why), "round trip %d inferring the map: %s", which, why);
    schedule_free(y);
    y = schedule_read_csv(csv, strlen(csv), 0, 0, NULL, err, sizeof err);
    CHECK(y != NULL, "round trip %d inferring everything: %s", which, err);
    if (y) CHECK(same_schedule(x, y, why, sizeof why), "round trip %d inferring everything: %s", which, why);
    schedule_free(y);
    /* written again, byte for byte */
    y = schedule_read_csv(csv, strlen(csv), x->nstages, x->nmb, x->stage_rank, err, sizeof err);
    if (y) {
      char *again = csv_of(y);
      CHECK(!strcmp(csv, again), "round trip %d: CSV differs when written again", which);
      free(again);
    }
    schedule_free(y);
    free(csv);
  }

  /* the exact bytes: csv.writer's rows, "\r\n" ends, no header */
  Schedule *t = one_f_one_b(2, 2);
  char *csv = csv_of(t);
  CHECK(!strcmp(csv, "0F0,0F1,0B0,0B1\r\n1F0,1B0,1F1,1B1\r\n"), "1F1B p=2 m=2 as CSV: '%s'", csv);
  free(csv);
  char *txt = text_of(t);
  CHECK(!strcmp(txt, "# pipec schedule: 2 ranks, 2 stages, 2 microbatches\n# stage -> rank: 0->0 1->1\n"
                     "rank 0: 0F0 0F1 0B0 0B1\nrank 1: 1F0 1B0 1F1 1B1\n"),
        "text form: '%s'", txt);
  free(txt);
  schedule_free(t);
  schedule_free(s);
  schedule_free(c);
}

/* ---- hand-written CSV ---- */

static void expect_rows(const char *name, const char *text, size_t len, int nstages, int nmb, const int *map,
                        int nranks, const char *const *rows, const int *want_map) {
  char err[256] = "";
  Schedule *s = schedule_read_csv(text, len, nstages, nmb, map, err, sizeof err);
  CHECK(s != NULL, "%s: refused: %s", name, err);
  if (!s) return;
  CHECK(s->nranks == nranks, "%s: %d ranks, want %d", name, s->nranks, nranks);
  for (int r = 0; r < nranks && r < s->nranks; r++) {
    char got[512];
    row_text(s, r, got, sizeof got);
    CHECK(!strcmp(got, rows[r]), "%s: rank %d is '%s', want '%s'", name, r, got, rows[r]);
  }
  for (int st = 0; want_map && st < s->nstages; st++)
    CHECK(s->stage_rank[st] == want_map[st], "%s: stage %d on rank %d, want %d", name, st, s->stage_rank[st], want_map[st]);
  schedule_free(s);
}

static void hand_written(void) {
  const int map2[] = {0, 1};
  const char *r2[] = {"0F0 0F1 0B0 0B1", "1F0 1B0 1F1 1B1"};
#define ROWS2(name, text) expect_rows(name, text, sizeof text - 1, 2, 2, map2, 2, r2, map2)
  ROWS2("LF", "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n");
  ROWS2("CRLF", "0F0,0F1,0B0,0B1\r\n1F0,1B0,1F1,1B1\r\n");
  ROWS2("CR", "0F0,0F1,0B0,0B1\r1F0,1B0,1F1,1B1\r");
  ROWS2("no final line end", "0F0,0F1,0B0,0B1\r\n1F0,1B0,1F1,1B1");
  ROWS2("quotes", "\"0F0\",\"0F1\",0B0,\"0B1\"\r\n1F0,\"1B0\",1F1,1B1\r\n");
  ROWS2("trailing commas", "0F0,0F1,0B0,0B1,\r\n1F0,1B0,1F1,1B1,,\r\n");
  ROWS2("trailing comma at the end of the text", "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1,");
  ROWS2("empty cells (PyTorch idle slots)", "0F0,0F1,,0B0,,0B1\r\n,1F0,1B0,1F1,1B1,\r\n");
  ROWS2("empty quoted cells", "0F0,0F1,\"\",0B0,0B1\r\n\"\",1F0,1B0,1F1,1B1\r\n");
  ROWS2("spaces around cells", " 0F0 ,0F1,\t0B0, \"0B1\" \n1F0 , 1B0,1F1,1B1\n");
  ROWS2("blank trailing lines", "0F0,0F1,0B0,0B1\r\n1F0,1B0,1F1,1B1\r\n\r\n\n   \r\n,,\r\n");
  ROWS2("byte-order mark", "\xEF\xBB\xBF"
                           "0F0,0F1,0B0,0B1\r\n1F0,1B0,1F1,1B1\r\n");

  /* the text need not end in NUL: only len bytes are read */
  const char buf[] = "0F0,0F1,0B0,0B1\n1F0,1B0,1F1,1B1\n9X9";
  expect_rows("len stops early", buf, sizeof buf - 4, 2, 2, map2, 2, r2, map2);

  /* inferring the map: loop and V placements, rows = ranks */
  const char *r_loop[] = {"0F0 2F0 2B0 0B0", "1F0 3F0 3B0 1B0"};
  const int loop[] = {0, 1, 0, 1}, vee[] = {0, 1, 1, 0};
  expect_rows("loop placement inferred", "0F0,2F0,2B0,0B0\n1F0,3F0,3B0,1B0\n", 32, 4, 1, NULL, 2, r_loop, loop);
  const char *r_v[] = {"0F0 3F0 3B0 0B0", "1F0 2F0 2B0 1B0"};
  expect_rows("V placement inferred", "0F0,3F0,3B0,0B0\n1F0,2F0,2B0,1B0\n", 32, 4, 1, NULL, 2, r_v, vee);
  {
    char err[256];
    Schedule *s = schedule_read_csv("0F0,0F5\n1F0\n", 12, 0, 0, NULL, err, sizeof err);
    CHECK(s && s->nstages == 2 && s->nmb == 6, "stages and microbatches inferred: %s %d %d", s ? "" : err,
          s ? s->nstages : -1, s ? s->nmb : -1);
    schedule_free(s);
  }

  /* a blank row between rows is a rank without actions; so is a trailing
   * blank row when the plan has that rank */
  const int map3[] = {0, 2};
  const char *r3[] = {"0F0 0B0", "", "1F0 1B0"};
  expect_rows("blank middle row", "0F0,0B0\n\n1F0,1B0\n", 17, 2, 1, map3, 3, r3, map3);
  const int map_last[] = {0, 1};
  {
    char err[256];
    const int m01[] = {0, 0};
    Schedule *s = schedule_read_csv("0F0,1F0\n\n", 9, 2, 1, m01, err, sizeof err);
    CHECK(s && s->nranks == 1, "one rank, blank trailing row dropped: %s", s ? "" : err);
    schedule_free(s);
    s = schedule_read_csv("0F0,0B0\n\n", 9, 2, 1, map_last, err, sizeof err);
    CHECK(s && s->nranks == 2 && s->rank[1].n == 0, "trailing blank row kept for the plan's last rank: %s",
          s ? "" : err);
    schedule_free(s);
  }

  /* what a lowered schedule adds, by hand */
  const char *r_all[] = {"0F0 0SEND_F0 0RECV_B0 0B0 0REDUCE_GRAD TIED_ALLREDUCE STEP",
                         "1RECV_F0 1F0 1I0 1W0 1SEND_B0 1REDUCE_GRAD TIED_ALLREDUCE STEP"};
  const char all[] = "0F0,0SEND_F0,0RECV_B0,0B0,0REDUCE_GRAD,TIED_ALLREDUCE,STEP\r\n"
                     "1RECV_F0,1F0,1I0,1W0,1SEND_B0,1REDUCE_GRAD,TIED_ALLREDUCE,STEP\r\n";
  expect_rows("every kind", all, sizeof all - 1, 2, 1, map2, 2, r_all, map2);
  expect_rows("every kind, map inferred", all, sizeof all - 1, 2, 1, NULL, 2, r_all, map2);
}

/* ---- malformed CSV: NULL and the exact message ---- */

static void expect_error(const char *name, const char *text, size_t len, int nstages, int nmb, const int *map,
                         const char *want) {
  char err[256] = "unset";
  Schedule *s = schedule_read_csv(text, len, nstages, nmb, map, err, sizeof err);
  CHECK(s == NULL, "%s: accepted", name);
  CHECK(!strcmp(err, want), "%s:\n   got  '%s'\n   want '%s'", name, err, want);
  schedule_free(s);
}

static void malformed(void) {
  const int map2[] = {0, 1};
#define BAD(name, text, want) expect_error(name, text, sizeof text - 1, 2, 2, map2, want)
  BAD("unknown kind", "0F0,0X1\r\n1F0\r\n", "row 1, column 2: '0X1' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("lower case", "0F0\r\n1f0\r\n", "row 2, column 1: '1f0' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("no stage", "F0\r\n1F0\r\n", "row 1, column 1: 'F0' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("no microbatch", "0F\r\n1F0\r\n", "row 1, column 1: '0F' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("text after", "0F0,,0F1x\r\n1F0\r\n", "row 1, column 3: '0F1x' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("two in a cell", "0F0 0F1\r\n1F0\r\n", "row 1, column 1: '0F0 0F1' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("comma inside quotes", "\"0F0,0F1\"\r\n1F0\r\n",
      "row 1, column 1: '0F0,0F1' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("STEP with a stage", "0F0,0STEP\r\n1F0\r\n",
      "row 1, column 2: '0STEP' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("REDUCE_GRAD with a microbatch", "0REDUCE_GRAD1\r\n1F0\r\n",
      "row 1, column 1: '0REDUCE_GRAD1' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("PyTorch's FSDP actions", "0UNSHARD,0F0\r\n1F0\r\n",
      "row 1, column 1: '0UNSHARD' is not an action (expected e.g. 0F1, 1SEND_F1)");
  BAD("stage out of range", "0F0,2F0\r\n1F0\r\n", "row 1, column 2: '2F0': there is no stage 2; stages are 0 to 1");
  BAD("send from a stage out of range", "0F0\r\n1F0,7SEND_F0\r\n",
      "row 2, column 2: '7SEND_F0': there is no stage 7; stages are 0 to 1");
  BAD("microbatch out of range", "0F0,0F2\r\n1F0\r\n",
      "row 1, column 2: '0F2': there is no microbatch 2; microbatches are 0 to 1");
  BAD("stage on the wrong row", "0F0,1F0\r\n1B0\r\n", "row 1, column 2: '1F0': stage 1 runs on rank 1 (row 2), not on rank 0");
  BAD("too many rows", "0F0\r\n1F0\r\n1B0\r\n", "the schedule has 3 rows, but the plan has 2 ranks (one row per rank)");
  BAD("too few rows", "0F0,0B0\r\n", "the schedule has 1 row, but the plan has 2 ranks (one row per rank)");
  BAD("quote not closed", "0F0,\"1F0\r\n1B0\r\n", "row 1, column 2: a quoted cell is not closed");
  BAD("empty", "", "the schedule is empty");
  BAD("only blank lines", "\r\n\r\n  ,, \n", "the schedule is empty");
  BAD("long cell shortened", "0F0,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n1F0\r\n",
      "row 1, column 2: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is not an action (expected e.g. 0F1, 1SEND_F1)");
  {
    const char nul[] = "0F\0"
                       "1\r\n1F0\r\n";
    expect_error("NUL inside a cell", nul, sizeof nul - 1, 2, 2, map2,
                 "row 1, column 1: '0F?1' is not an action (expected e.g. 0F1, 1SEND_F1)");
  }
  /* the map inferred */
  expect_error("stage on two rows", "0F0,1F0\r\n1B0\r\n", 15, 2, 1, NULL,
               "row 2, column 1: '1B0': stage 1 is already on row 1; a stage runs on one rank");
  expect_error("stage on no row", "0F0\r\n1F0\r\n", 10, 3, 1, NULL, "stage 2 is on no row, so its rank is unknown");
  expect_error("stage on no row, inferred count", "0F0\r\n2F0\r\n", 10, 0, 1, NULL,
               "stage 1 is on no row, so its rank is unknown");
  expect_error("nothing with a stage", "STEP\r\n", 6, 0, 0, NULL, "the schedule names no stage");
  /* a bad plan from the caller */
  const int neg[] = {0, -1};
  expect_error("negative rank in the map", "0F0\r\n", 5, 2, 1, neg, "the plan puts stage 1 on rank -1");
  /* err may be NULL */
  CHECK(schedule_read_csv("0X0", 3, 1, 1, NULL, NULL, 0) == NULL, "bad text with no err buffer accepted");
}

/* ---- SVG: a tiny XML checker ---- */

/* Well-formed enough for a renderer: tags nest and close, attributes are
 * quoted, '&' starts an entity, '<' never appears in text or attributes. */
static int xml_ok(const char *x, char *why, size_t n) {
  const char *stack[256];
  size_t lens[256];
  int depth = 0, roots = 0;
  const char *p = x;
  if (!strncmp(p, "<?xml", 5)) {
    p = strstr(p, "?>");
    if (!p) return snprintf(why, n, "unclosed <?xml"), 0;
    p += 2;
  }
  while (*p) {
    if (*p == '&') {
      const char *e = p + 1;
      while (*e && *e != ';' && *e != '<' && *e != ' ' && e - p < 10) e++;
      if (*e != ';' || e == p + 1) return snprintf(why, n, "bare '&' at %ld", (long)(p - x)), 0;
      p = e + 1;
      continue;
    }
    if (*p == '>') return snprintf(why, n, "stray '>' at %ld", (long)(p - x)), 0;
    if (*p != '<') {
      if (depth == 0 && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        return snprintf(why, n, "text outside the root at %ld", (long)(p - x)), 0;
      p++;
      continue;
    }
    if (!strncmp(p, "<!--", 4)) {
      const char *e = strstr(p, "-->");
      if (!e) return snprintf(why, n, "unclosed comment"), 0;
      p = e + 3;
      continue;
    }
    int closing = p[1] == '/';
    const char *name = p + 1 + closing, *q = name;
    while (*q && (*q == '-' || *q == ':' || *q == '_' || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9'))) q++;
    size_t nl = (size_t)(q - name);
    if (!nl) return snprintf(why, n, "bad tag at %ld", (long)(p - x)), 0;
    /* attributes */
    while (*q && *q != '>' && !(*q == '/' && q[1] == '>')) {
      if (*q == ' ' || *q == '\n' || *q == '\t') {
        q++;
        continue;
      }
      if (closing) return snprintf(why, n, "attribute in a closing tag at %ld", (long)(q - x)), 0;
      const char *an = q;
      while (*q && *q != '=' && *q != ' ' && *q != '>') q++;
      if (*q != '=' || q == an) return snprintf(why, n, "attribute without value at %ld", (long)(an - x)), 0;
      q++;
      char quote = *q;
      if (quote != '"' && quote != '\'') return snprintf(why, n, "unquoted attribute at %ld", (long)(an - x)), 0;
      q++;
      while (*q && *q != quote) {
        if (*q == '<') return snprintf(why, n, "'<' in an attribute at %ld", (long)(q - x)), 0;
        if (*q == '&') {
          const char *e = q + 1;
          while (*e && *e != ';' && e - q < 10) e++;
          if (*e != ';') return snprintf(why, n, "bare '&' in an attribute at %ld", (long)(q - x)), 0;
        }
        q++;
      }
      if (!*q) return snprintf(why, n, "unclosed attribute"), 0;
      q++;
    }
    if (!*q) return snprintf(why, n, "unclosed tag"), 0;
    int empty = *q == '/';
    p = q + (empty ? 2 : 1);
    if (closing) {
      if (depth == 0 || lens[depth - 1] != nl || strncmp(stack[depth - 1], name, nl))
        return snprintf(why, n, "</%.*s> does not close the open tag", (int)nl, name), 0;
      depth--;
    } else if (!empty) {
      if (depth == 0) roots++;
      if (depth == 256) return snprintf(why, n, "too deep"), 0;
      stack[depth] = name, lens[depth] = nl, depth++;
    } else if (depth == 0)
      roots++;
  }
  if (depth) return snprintf(why, n, "<%.*s> never closed", (int)lens[depth - 1], stack[depth - 1]), 0;
  if (roots != 1) return snprintf(why, n, "%d root elements", roots), 0;
  return 1;
}

static void svg(void) {
  char why[200];
  /* the checker itself */
  CHECK(xml_ok("<a><b x=\"1\"/>t &amp; u</a>", why, sizeof why), "checker refuses good XML: %s", why);
  CHECK(!xml_ok("<a><b></a>", why, sizeof why), "checker takes bad nesting");
  CHECK(!xml_ok("<a>x & y</a>", why, sizeof why), "checker takes a bare &");
  CHECK(!xml_ok("<a b=c></a>", why, sizeof why), "checker takes an unquoted attribute");

  const struct {
    Schedule *(*make)(int, int);
    int p, m;
  } cases[] = {{one_f_one_b, 4, 8}, {looped_with_iw, 3, 4}, {one_f_one_b, 1, 1}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    Schedule *c = cases[k].make(cases[k].p, cases[k].m);
    Schedule *s = schedule_lower(c, 2, 1, 1);
    SimResult r = schedule_simulate(s, NULL, k == 1 ? 0.25 : 0);
    CHECK(r.ok, "case %zu does not simulate: %s", k, r.error);
    int ncompute = 0;
    for (int rk = 0; rk < s->nranks; rk++)
      for (int i = 0; i < s->rank[rk].n; i++) {
        int kd = s->rank[rk].a[i].kind;
        ncompute += kd == ACT_F || kd == ACT_B || kd == ACT_I || kd == ACT_W;
      }
    int rc;
    char *x = svg_of(s, &r, "GPipe & 1F1B <compared> \"q\"", &rc);
    CHECK(rc == 0, "case %zu: write_svg returned %d", k, rc);
    CHECK(!strncmp(x, "<?xml", 5), "case %zu: no XML declaration", k);
    CHECK(strstr(x, "<svg xmlns=\"http://www.w3.org/2000/svg\"") != NULL, "case %zu: no svg element with xmlns", k);
    CHECK(strstr(x, "version=\"1.1\"") != NULL, "case %zu: not SVG 1.1", k);
    CHECK(xml_ok(x, why, sizeof why), "case %zu: not well-formed: %s", k, why);
    CHECK(strstr(x, "GPipe &amp; 1F1B &lt;compared&gt; &quot;q&quot;") != NULL, "case %zu: title not escaped", k);
    CHECK(strstr(x, "GPipe & 1F1B") == NULL && strstr(x, "<compared>") == NULL, "case %zu: raw title in the SVG", k);
    /* one rect (with its tooltip) per compute action, plus lanes, swatches, background */
    CHECK(count(x, "<title>rank ") == ncompute, "case %zu: %d action rects, want %d", k, count(x, "<title>rank "), ncompute);
    CHECK(count(x, "<rect") >= ncompute + s->nranks + 1, "case %zu: only %d rects", k, count(x, "<rect"));
    CHECK(strstr(x, "step time ") && strstr(x, "mean bubble ") && strstr(x, "peak in-flight"), "case %zu: no summary", k);
    char lane[32];
    snprintf(lane, sizeof lane, ">rank %d</text>", s->nranks - 1);
    CHECK(strstr(x, lane) != NULL, "case %zu: no label for the last rank", k);
    CHECK(strstr(x, "</svg>\n") != NULL && !strcmp(x + strlen(x) - 7, "</svg>\n"), "case %zu: does not end in </svg>", k);
    free(x);
    x = svg_of(s, &r, NULL, &rc);
    CHECK(rc == 0 && strstr(x, "pipec schedule") != NULL, "case %zu: default title missing", k);
    free(x);
    /* no timing: refused, nothing written */
    x = svg_of(s, NULL, "t", &rc);
    CHECK(rc == -1 && x[0] == '\0', "case %zu: SVG without timing gave %d, '%.20s'", k, rc, x);
    free(x);
    sim_result_free(&r);
    schedule_free(s);
    schedule_free(c);
  }
  /* an invalid schedule: refused too */
  Schedule *bad = schedule_new(1, 1, 1, (int[]){0});
  schedule_push(bad, 0, (Action){ACT_B, 0, 0});
  SimResult rb = schedule_simulate(bad, NULL, 0);
  int rc;
  char *x = svg_of(bad, &rb, "bad", &rc);
  CHECK(!rb.ok && rc == -1 && x[0] == '\0', "SVG of an invalid schedule: rc %d", rc);
  free(x);
  sim_result_free(&rb);
  schedule_free(bad);
}

/* ---- grid ---- */

static int rank_lines(const char *g, int *longest) {
  int n = 0;
  *longest = 0;
  for (const char *p = g; *p;) {
    const char *e = strchr(p, '\n');
    if (!e) e = p + strlen(p);
    if (!strncmp(p, "rank ", 5)) n++;
    if (e - p > *longest) *longest = (int)(e - p);
    p = *e ? e + 1 : e;
  }
  return n;
}

static void grid(void) {
  /* 1F1B p=4 m=8: one block, one row per rank, the bubble (p-1)/(m+p-1) */
  Schedule *c = one_f_one_b(4, 8);
  Schedule *s = schedule_lower(c, 1, 0, 1);
  SimResult r = schedule_simulate(s, NULL, 0);
  CHECK(r.ok, "1f1b: %s", r.error);
  char *g = grid_of(s, &r, 0);
  int longest;
  CHECK(rank_lines(g, &longest) == 4, "grid 1f1b p=4: %d rank rows, want 4:\n%s", rank_lines(g, &longest), g);
  CHECK(longest <= 200, "grid 1f1b p=4: a line of %d characters", longest);
  CHECK(count(g, "bubble  27.3%") == 4, "grid 1f1b p=4: bubble 27.3%% not on every row:\n%s", g);
  CHECK(strstr(g, "rank 0 | F0 F1 F2 F3 .  .  .  .  .  .  B0--- F4 ") != NULL, "grid 1f1b p=4: rank 0 row:\n%s", g);
  CHECK(strstr(g, "rank 3 | .  .  .  F0 B0--- F1 B1--- ") != NULL, "grid 1f1b p=4: rank 3 row:\n%s", g);
  CHECK(strstr(g, "step time 33") != NULL, "grid 1f1b p=4: no step time:\n%s", g);
  CHECK(strchr(g, '\033') == NULL, "grid without colour has escape codes");
  free(g);
  g = grid_of(s, &r, 1);
  CHECK(strstr(g, "\033[") != NULL && rank_lines(g, &longest) == 4, "grid with colour: no escape codes or wrong rows");
  free(g);
  /* untimed: still one row per rank, actions in order */
  g = grid_of(s, NULL, 0);
  CHECK(rank_lines(g, &longest) == 4 && strstr(g, "untimed") != NULL, "untimed grid:\n%s", g);
  CHECK(strstr(g, "rank 3 | F0 B0 F1 B1 ") != NULL, "untimed grid, rank 3:\n%s", g);
  free(g);
  sim_result_free(&r);
  schedule_free(s);
  schedule_free(c);

  /* long: wraps into blocks, every line within 200 characters */
  c = one_f_one_b(8, 48);
  s = schedule_lower(c, 1, 0, 1);
  r = schedule_simulate(s, NULL, 0);
  g = grid_of(s, &r, 0);
  int rows = rank_lines(g, &longest);
  CHECK(rows % 8 == 0 && rows >= 16, "long grid: %d rank rows, not a multiple of 8 above 8", rows);
  CHECK(longest <= 200, "long grid: a line of %d characters", longest);
  CHECK(count(g, "| bubble") == 8, "long grid: %d bubble figures, want 8", count(g, "| bubble"));
  free(g);
  g = grid_of(s, &r, 1);
  CHECK(rank_lines(g, &longest) == rows, "long colour grid: rows differ");
  free(g);
  sim_result_free(&r);
  schedule_free(s);
  schedule_free(c);

  /* several stages per rank, with communication time: labels carry the stage,
   * columns are the distinct start times */
  c = looped_with_iw(3, 4);
  s = schedule_lower(c, 2, 1, 1);
  r = schedule_simulate(s, NULL, 0.25);
  CHECK(r.ok, "looped: %s", r.error);
  g = grid_of(s, &r, 0);
  rows = rank_lines(g, &longest);
  CHECK(rows > 0 && rows % 3 == 0 && longest <= 200, "looped grid: %d rows, a line of %d:\n%s", rows, longest, g);
  CHECK(strstr(g, "rank 0 | 0F0 0F1") != NULL && strstr(g, "5I0") && strstr(g, "5W0"),
        "looped grid: labels without stage:\n%s", g);
  CHECK(strstr(g, "not to scale") != NULL, "looped grid with comm time: not in distinct-start mode:\n%s", g);
  free(g);
  sim_result_free(&r);
  schedule_free(s);
  schedule_free(c);
}

int main(void) {
  round_trip();
  hand_written();
  malformed();
  svg();
  grid();
  return check_summary();
}
