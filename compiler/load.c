/* load.c — reading .pipe files, following imports, and running the checks.
 *
 * `import "nn"` loads the standard library built into pipec (lib/nn.pipe);
 * `import "mine"` or `import "path/to/mine.pipe"` loads a file relative to
 * the importing file, then from each --import-dir. Each file loads once;
 * an imported file holds only blocks and imports.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compiler/sema.h"
#include "lexstate.h"

enum { MAX_FILE = 64 << 20 };

typedef struct Loader {
  Sema *S;
  PtrVec files; /* SrcFile* loaded */
} Loader;

static SrcFile *read_file(Sema *S, const char *path, Loc from, int quiet) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (!quiet) diag_error(S->D, from, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
    fclose(f);
    if (!quiet) diag_error(S->D, from, "'%s' is a directory; give a .pipe file", path);
    return NULL;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (len + 1 >= cap) {
      if (cap >= MAX_FILE) {
        free(buf);
        fclose(f);
        diag_error(S->D, from, "'%s' is larger than %d MiB; that is not a model description", path, MAX_FILE >> 20);
        return NULL;
      }
      cap *= 2;
      buf = realloc(buf, cap);
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    if (!n) break;
    len += n;
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    free(buf);
    diag_error(S->D, from, "error reading '%s'", path);
    return NULL;
  }
  SrcFile *sf = arena_alloc(S->A, sizeof *sf);
  sf->path = arena_strdup(S->A, path);
  sf->text = arena_strndup(S->A, buf, len);
  sf->len = (long)len;
  free(buf);
  return sf;
}

static void load_entries(Loader *L, const SrcFile *sf, int is_main);

static int already(Loader *L, const char *path) {
  for (int i = 0; i < L->files.len; i++)
    if (!strcmp(((SrcFile *)L->files.items[i])->path, path)) return 1;
  return 0;
}

static void do_import(Loader *L, const Entry *e) {
  Sema *S = L->S;
  const char *name = e->name;
  if (!*name) {
    diag_error(S->D, e->name_loc, "import needs a name, as in import \"nn\"");
    return;
  }
  for (int i = 0; pipe_stdlib[i].name; i++)
    if (!strcmp(pipe_stdlib[i].name, name)) {
      const char *path = arena_printf(S->A, "<%s>", name);
      if (already(L, path)) return;
      SrcFile *sf = arena_alloc(S->A, sizeof *sf);
      sf->path = path, sf->text = pipe_stdlib[i].text, sf->len = pipe_stdlib[i].len;
      ptrvec_push(S->A, &L->files, sf);
      load_entries(L, sf, 0);
      return;
    }
  size_t n = strlen(name);
  const char *file = n > 5 && !strcmp(name + n - 5, ".pipe") ? name : arena_printf(S->A, "%s.pipe", name);
  PtrVec tried = {0};
  const char *dir = e->loc.file->path;
  const char *slash = strrchr(dir, '/');
  const char *cand = file[0] == '/' || !slash || dir[0] == '<' ? file : arena_printf(S->A, "%.*s/%s", (int)(slash - dir), dir, file);
  ptrvec_push(S->A, &tried, (void *)cand);
  for (int i = 0; S->opt && S->opt->import_dirs && S->opt->import_dirs[i] && file[0] != '/'; i++)
    ptrvec_push(S->A, &tried, arena_printf(S->A, "%s/%s", S->opt->import_dirs[i], file));
  for (int i = 0; i < tried.len; i++) {
    if (already(L, tried.items[i])) return;
    SrcFile *sf = read_file(S, tried.items[i], e->name_loc, 1);
    if (sf) {
      ptrvec_push(S->A, &L->files, sf);
      load_entries(L, sf, 0);
      return;
    }
  }
  char list[512] = "";
  for (int i = 0; i < tried.len; i++) {
    if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
    strncat(list, tried.items[i], sizeof list - strlen(list) - 1);
  }
  const char *names[8];
  int k = 0;
  for (; pipe_stdlib[k].name && k < 8; k++) names[k] = pipe_stdlib[k].name;
  const char *dym = did_you_mean(name, names, k);
  if (dym)
    diag_error(S->D, e->name_loc, "cannot find import '%s'; did you mean the built-in \"%s\"?", name, dym);
  else
    diag_error(S->D, e->name_loc, "cannot find import '%s' (looked for %s); add --import-dir DIR", name, list);
}

static void load_entries(Loader *L, const SrcFile *sf, int is_main) {
  Sema *S = L->S;
  int syntax = 0;
  Entry *root = pipe_parse_file(S->A, S->D, sf, &syntax);
  if (syntax) return;
  for (Entry *e = root; e; e = e->next) {
    switch (e->kind) {
    case E_IMPORT: do_import(L, e); break;
    case E_BLOCK: {
      if (sema_is_prim(e->name)) {
        diag_error(S->D, e->name_loc, "block '%s' has the name of a built-in module; choose another name", e->name);
        break;
      }
      const BlockDef *old = sema_find_block(S, e->name);
      if (old) {
        diag_error(S->D, e->name_loc, "block '%s' is defined twice", e->name);
        diag_note(S->D, old->loc, "the first definition is here");
        break;
      }
      BlockDef *b = arena_alloc(S->A, sizeof *b);
      b->name = e->name, b->loc = e->name_loc, b->entry = e;
      ptrvec_push(S->A, &S->blocks, b);
      break;
    }
    case E_MODEL:
      if (!is_main) {
        diag_error(S->D, e->loc, "an imported file holds blocks only; move model '%s' into the file you compile", e->name);
      } else if (S->model) {
        diag_error(S->D, e->name_loc, "a second model '%s'; a .pipe file describes one model", e->name);
        diag_note(S->D, S->model->name_loc, "the first model is here");
      } else
        S->model = e;
      break;
    case E_FORWARD:
    case E_RETURN:
      diag_error(S->D, e->loc, "'%s' belongs inside a block or model", e->kind == E_FORWARD ? "forward" : "return");
      break;
    default:
      if (!is_main)
        diag_error(S->D, e->loc, "an imported file holds blocks only; move '%s' into the file you compile", e->name);
      else
        ptrvec_push(S->A, &S->top, e);
    }
  }
}

Program *pipe_frontend(Arena *arena, Diag *diag, const char *path, const char *text, long len, const FrontendOptions *opt) {
  Sema S = {.A = arena, .D = diag, .opt = opt, .budget = 200000};
  S.P = arena_alloc(arena, sizeof(Program));
  Loader L = {.S = &S};
  int before = diag->errors;
  SrcFile *sf;
  Loc none = {0};
  if (text) {
    sf = arena_alloc(arena, sizeof *sf);
    sf->path = arena_strdup(arena, path);
    sf->text = arena_strndup(arena, text, (size_t)len);
    sf->len = len;
  } else {
    sf = read_file(&S, path, none, 0);
    if (!sf) return NULL;
  }
  ptrvec_push(arena, &L.files, sf);
  load_entries(&L, sf, 1);
  if (diag->errors != before) return NULL;
  if (!S.model) {
    Loc at = {.file = sf, .line = 1, .col = 1, .len = 1};
    diag_error(diag, at, "no model in this file; describe one with 'model NAME { ... }'");
    return NULL;
  }
  sema_check_model(&S);
  /* settings are checked even when the model has errors, so one run
     reports both; placement waits for a sound model (see placement.c) */
  sema_check_sections(&S);
  return diag->errors != before ? NULL : S.P;
}
