/* main.c — the pipec command line. Exit status: 0 success, 1 errors in the
 * input, 2 usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <errno.h>
#include <unistd.h>

#include "compiler/cost.h"
#include "compiler/frontend.h"
#include "compiler/build.h"
#include "compiler/kernels_emit.h"
#include "compiler/memplan.h"
#include "compiler/opgraph.h"
#include "compiler/plan.h"
#include "compiler/report.h"
#include "lib/bpe.h"
#include "lib/files.h"
#include "lib/tokfile.h"
#include "lib/xalloc.h"
#include "lib/ckpt.h"
#include "version.h"

static void usage(FILE *out) {
  fputs("usage: pipec [options] FILE.pipe\n"
        "\n"
        "Compiles a .pipe model description into one executable per pipeline stage.\n"
        "\n"
        "options:\n"
        "  --check              check the file (syntax, names, sizes, placement, parallel\n"
        "                       and train settings), report every error, and stop\n"
        "  --dump-model         print the checked model: modules, parameters, stages\n"
        "  --explain-partition  print each stage's modules, FLOPs, parameter and\n"
        "                       activation bytes, and the imbalance (slowest / mean)\n"
        "  --dump-ops           print the forward and backward operations (I and W)\n"
        "  --dump-kernels       print the kernels the operations fuse into\n"
        "  --emit WHAT          with -o, also keep intermediate files: llvm (DIR/STAGE.ll),\n"
        "                       obj (DIR/.pipec/STAGE.o), kernels (DIR/STAGE.kernels.cu,\n"
        "                       its cubins for sm_80 and sm_90, PTX); a list: llvm,obj\n"
        "  --memory             print each rank's static memory plan (parameters, gradients,\n"
        "                       optimizer state, saved activations, workspace)\n"
        "  --device-memory SIZE refuse a plan that needs more than SIZE on any rank\n"
        "                       (e.g. 80GiB, 24GB, 16G)\n"
        "  --dump-plan          print the rank layout and the tp, dp, pp and tied groups\n"
        "  --plan-json FILE     write the rank plan as JSON to FILE\n"
        "  --dump-schedule      print the schedule IR of every rank, and its simulation:\n"
        "                       step time, bubble and peak in-flight microbatches\n"
        "  --schedule-grid      print the schedule as a time x rank grid\n"
        "  --schedule-csv FILE  write the schedule in PyTorch's CSV layout (a row per rank)\n"
        "  --load-schedule FILE use the schedule in FILE (PyTorch's CSV layout) after\n"
        "                       validating it; with -o, the stage programs run it\n"
        "  --schedule-svg FILE  write the schedule as an SVG Gantt chart\n"
        "  --tflops N           sustained TFLOP/s per rank for simulated times (default 100)\n"
        "  --world-size N       the number of ranks the job runs on; dp = auto is derived\n"
        "                       from it, and a plan needing another number is an error\n"
        "  --import-dir DIR     also look for imported .pipe files in DIR (repeatable)\n"
        "  --max-errors N       stop printing after N errors (default 50, 0 = all)\n"
        "  -o DIR               compile: DIR/MODEL-stageK (one executable per pipeline\n"
        "                       rank), DIR/launch, DIR/plan.json, DIR/schedule.txt\n"
        "  -h, --help           show this help\n"
        "\n"
        "       pipec merge CKPT_DIR -o model.safetensors\n"
        "  writes the latest checkpoint in CKPT_DIR (or CKPT_DIR/step-<s> itself) as one\n"
        "  Hugging Face GPT-2 safetensors file, whatever tp x pp layout saved it\n"
        "  --version            show the version\n"
        "\n"
        "  pipec tokenize --tokenizer DIR [--vocab-size V] FILE... -o OUT.bin\n"
        "                       encode text files with GPT-2's BPE (DIR: encoder.json and\n"
        "                       vocab.bpe, or vocab.json and merges.txt; V: only ids below V,\n"
        "                       i.e. the first V - 256 merges) into an llm.c token file\n"
        "  pipec tokenize --tokenizer DIR [--vocab-size V] --decode FILE.bin [-o OUT]\n"
        "                       the text of a token file (stdout without -o)\n"
        "\n"
        "examples:\n"
        "  pipec --check models/gpt2.pipe\n"
        "  pipec --dump-model models/gpt2-tiny.pipe\n"
        "  pipec --dump-schedule --schedule-svg gpt2.svg models/gpt2.pipe\n"
        "\n"
        "Documentation: docs/language.md\n",
        out);
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "pipec: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'pipec --help' for more information.\n");
  return 2;
}

static int parse_count(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > 1 << 24) return 0;
  *out = (int)v;
  return 1;
}


/* pipec tokenize: text files -> one llm.c token file (each file's tokens in
   turn, <|endoftext|> before each when the vocabulary has it), or back */
static int tokenize_main(int argc, char **argv) {
  const char *dir = NULL, *out = NULL, *decode = NULL, *files[argc + 1];
  int nf = 0, vocab = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((!strcmp(a, "--tokenizer") || !strcmp(a, "--vocab-size") || !strcmp(a, "-o") || !strcmp(a, "--decode")) && i + 1 >= argc)
      return usage_error("tokenize: option '%s' needs a value", a);
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      puts("usage: pipec tokenize --tokenizer DIR [--vocab-size V] FILE... -o OUT.bin\n"
           "       pipec tokenize --tokenizer DIR [--vocab-size V] --decode FILE.bin [-o OUT]\n"
           "Encodes text files with GPT-2's BPE (DIR: encoder.json and vocab.bpe, or vocab.json and\n"
           "merges.txt) into one llm.c token file, <|endoftext|> before each file when the vocabulary\n"
           "has it; --vocab-size V keeps ids below V (GPT-2's first V - 256 merges). --decode: back to text.");
      return 0;
    }
    if (!strcmp(a, "--tokenizer")) dir = argv[++i];
    else if (!strcmp(a, "-o")) out = argv[++i];
    else if (!strcmp(a, "--decode")) decode = argv[++i];
    else if (!strcmp(a, "--vocab-size")) {
      if (!parse_count(argv[++i], &vocab) || vocab < 256) return usage_error("tokenize: --vocab-size needs an integer >= 256, not '%s'", argv[i]);
    } else if (a[0] == '-' && a[1]) return usage_error("tokenize: unknown option '%s'", a);
    else files[nf++] = a;
  }
  if (!dir) return usage_error("%s", "tokenize: give the tokenizer's folder with --tokenizer DIR");
  if (decode ? nf > 0 : !nf || !out) return usage_error("%s", decode ? "tokenize --decode takes one token file" : "tokenize: give text files and -o OUT.bin");
  char err[1024];
  Bpe *b = bpe_load_dir(dir, err, sizeof err);
  if (!b || (vocab && bpe_limit_vocab(b, vocab, err, sizeof err))) {
    fprintf(stderr, "pipec: %s%s%s\n", b ? dir : "", b ? ": " : "", err);
    bpe_free(b);
    return 1;
  }
  int status = 0;
  if (decode) {
    TokFile tf;
    int32_t *ids = NULL;
    char *text = NULL;
    size_t len = 0;
    if (!tok_open(&tf, decode, TOK_AUTO, err, sizeof err)) {
      ids = xcalloc(tf.ntok, sizeof *ids);
      for (size_t i = 0; i < tf.ntok; i++) ids[i] = tf.tokens[i];
      text = bpe_decode(b, ids, tf.ntok, &len, err, sizeof err);
      if (!text) snprintf(err + strlen(err), sizeof err - strlen(err), " (%s)", decode);
      tok_close(&tf);
    }
    if (!text) fprintf(stderr, "pipec: %s\n", err), status = 1;
    else if (out ? file_write_atomic(out, text, len, err, sizeof err) : fwrite(text, 1, len, stdout) != len)
      fprintf(stderr, "pipec: %s\n", out ? err : "cannot write the text"), status = 1;
    free(ids), free(text);
    bpe_free(b);
    return status;
  }
  size_t n = 0, cap = 0;
  uint16_t *toks = NULL;
  for (int k = 0; k < nf && !status; k++) {
    size_t len;
    char *text = file_read_all(files[k], &len);
    if (!text) {
      fprintf(stderr, "pipec: cannot read %s: %s\n", files[k], strerror(errno));
      status = 1;
      break;
    }
    int32_t *ids;
    size_t m = bpe_encode(b, text, len, &ids);
    if (n + m + 1 > cap) toks = xrealloc(toks, cap = 2 * (n + m + 1), sizeof *toks);
    if (bpe_eot(b) >= 0) toks[n++] = (uint16_t)bpe_eot(b);
    for (size_t i = 0; i < m; i++) {
      if (ids[i] > 65535) {
        fprintf(stderr, "pipec: %s: token id %d does not fit a token file's uint16 (limit the vocabulary with --vocab-size)\n", files[k], ids[i]);
        status = 1;
        break;
      }
      toks[n++] = (uint16_t)ids[i];
    }
    free(ids), free(text);
  }
  if (!status && tok_write(out, toks, n, 1, err, sizeof err)) fprintf(stderr, "pipec: %s\n", err), status = 1;
  if (!status) printf("pipec: wrote %s: %zu tokens of a %d-token vocabulary from %d file%s\n", out, n, bpe_vocab_size(b), nf, nf == 1 ? "" : "s");
  free(toks);
  bpe_free(b);
  return status;
}

static int merge_main(int argc, char **argv) {
  const char *dir = NULL, *out = NULL;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
    else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      printf("usage: pipec merge CKPT_DIR -o model.safetensors\n");
      return 0;
    } else if (argv[i][0] == '-' || dir) return usage_error("merge: unexpected argument '%s' (usage: pipec merge CKPT_DIR -o FILE)", argv[i]);
    else dir = argv[i];
  }
  if (!dir || !out) return usage_error("merge needs %s (usage: pipec merge CKPT_DIR -o FILE)", dir ? "-o FILE" : "a checkpoint folder");
  char err[1024];
  if (ck_merge(dir, out, err, sizeof err)) {
    fprintf(stderr, "pipec: merge: %s\n", err);
    return 1;
  }
  printf("pipec: wrote %s\n", out);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "merge")) return merge_main(argc, argv);
  if (argc > 1 && !strcmp(argv[1], "kernel-library")) { /* run by the build: the library every stage embeds */
    if (argc != 3) return usage_error("kernel-library needs %s (usage: pipec kernel-library DIR)", "one folder");
    char err[1 << 14];
    if (kernels_library_write(argv[2], err, sizeof err)) {
      if (!*err) snprintf(err, sizeof err, "unknown error");
      fprintf(stderr, "pipec: kernel library: %s\n", err);
      /* without NVRTC the key (0) is written and this is a note, not a failure: stages compile it when they can */
      return strstr(err, "cannot write") || strstr(err, "NVRTC could not") ? 1 : 0;
    }
    printf("pipec: wrote the kernel library to %s\n", argv[2]);
    return 0;
  }
  if (argc > 1 && !strcmp(argv[1], "tokenize")) return tokenize_main(argc - 1, argv + 1);
  const char *file = NULL, *outdir = NULL;
  int check = 0, dump = 0, max_errors = 50, explain = 0, dump_plan = 0, dump_ops = 0, dump_kernels = 0;
  BuildOptions bo = {0};
  int show_memory = 0;
  int64_t device_memory = 0;
  const char *plan_json = NULL;
  ReportOptions ro = {.tflops = 100, .color = isatty(1) && !getenv("NO_COLOR")};
  FrontendOptions opt = {0};
  const char *dirs[argc + 1];
  int ndirs = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    const char *eq = strchr(a, '=');
    char key[64] = "";
    if (!strncmp(a, "--", 2) && eq && eq - a < 63) {
      memcpy(key, a, (size_t)(eq - a));
      key[eq - a] = 0;
      val = eq + 1;
      a = key;
    }
#define NEED_VALUE()                                                           \
  do {                                                                         \
    if (!val) {                                                                \
      if (i + 1 >= argc) return usage_error("option '%s' needs a value", a);   \
      val = argv[++i];                                                         \
    }                                                                          \
  } while (0)
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--version")) {
      printf("pipec %s\n", PIPEC_VERSION);
      return 0;
    } else if (!strcmp(a, "--check")) check = 1;
    else if (!strcmp(a, "--dump-model")) dump = 1;
    else if (!strcmp(a, "--explain-partition")) explain = 1;
    else if (!strcmp(a, "--dump-plan")) dump_plan = 1;
    else if (!strcmp(a, "--dump-ops")) dump_ops = 1;
    else if (!strcmp(a, "--dump-kernels")) dump_kernels = 1;
    else if (!strcmp(a, "--memory")) show_memory = 1;
    else if (!strcmp(a, "--device-memory")) {
      NEED_VALUE();
      if ((device_memory = memplan_parse_bytes(val)) <= 0) return usage_error("--device-memory needs a size such as 80GiB, not '%s'", val);
    }
    else if (!strcmp(a, "--emit")) {
      NEED_VALUE();
      char kinds[256];
      snprintf(kinds, sizeof kinds, "%s", val);
      for (char *save = NULL, *k = strtok_r(kinds, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
        if (!strcmp(k, "llvm")) bo.emit_llvm = 1;
        else if (!strcmp(k, "obj")) bo.emit_obj = 1;
        else if (!strcmp(k, "kernels")) bo.emit_kernels = 1;
        else return usage_error("--emit takes llvm, obj or kernels (or a list: llvm,obj), not '%s'", k);
      }
    }
    else if (!strcmp(a, "--dump-schedule")) ro.dump = 1;
    else if (!strcmp(a, "--schedule-grid")) ro.grid = 1;
    else if (!strcmp(a, "--plan-json")) {
      NEED_VALUE();
      plan_json = val;
    } else if (!strcmp(a, "--schedule-csv")) {
      NEED_VALUE();
      ro.csv_out = val;
    } else if (!strcmp(a, "--load-schedule")) {
      NEED_VALUE();
      ro.csv_in = val;
    } else if (!strcmp(a, "--schedule-svg")) {
      NEED_VALUE();
      ro.svg_out = val;
    } else if (!strcmp(a, "--tflops")) {
      NEED_VALUE();
      char *end;
      ro.tflops = strtod(val, &end);
      if (*end || !(ro.tflops > 0) || ro.tflops > 1e6) return usage_error("--tflops needs a positive number, not '%s'", val);
    }
    else if (!strcmp(a, "--world-size")) {
      NEED_VALUE();
      if (!parse_count(val, &opt.world_size) || opt.world_size < 1) return usage_error("--world-size needs a positive integer, not '%s'", val);
    } else if (!strcmp(a, "--max-errors")) {
      NEED_VALUE();
      if (!parse_count(val, &max_errors)) return usage_error("--max-errors needs a non-negative integer, not '%s'", val);
    } else if (!strcmp(a, "--import-dir")) {
      NEED_VALUE();
      dirs[ndirs++] = val;
    } else if (!strcmp(a, "-o")) {
      NEED_VALUE();
      outdir = val;
    } else if (a[0] == '-' && a[1]) {
      return usage_error("unknown option '%s'", a);
    } else if (file) {
      return usage_error("one input file at a time; got a second, '%s'", a);
    } else
      file = a;
  }
  if (!file) return usage_error("%s", "no input file");
  if ((bo.emit_llvm || bo.emit_obj || bo.emit_kernels) && !outdir) return usage_error("%s", "--emit keeps files of a compile: give -o DIR too");
  dirs[ndirs] = NULL;
  opt.import_dirs = dirs;

  Arena arena = {0};
  Diag diag = {.out = stderr, .max_errors = max_errors};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  Program *p = pipe_frontend(&arena, &diag, file, NULL, 0, &opt);
  OpGraph *ops = p ? opgraph_build(&arena, &diag, p) : NULL; /* widths through every forward */
  if (!ops) p = NULL;
  else ops = opgraph_shard(&arena, ops, p->tp, 0); /* what one tensor-parallel rank runs (all alike) */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int status = 0;
  if (p && (show_memory || device_memory)) {
    /* the memory plan of each distinct pipeline, from its schedule */
    for (int i = 0; i < p->npipes && !status; i++) {
      const Pipeline *pl = &p->pipes[i];
      if (i && pl->stages == p->pipes[i - 1].stages) continue;
      SimResult sim;
      char err[512];
      Schedule *s = report_build(p, pl, ro.tflops, &sim, err, sizeof err);
      if (!s) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
        break;
      }
      MemPlan *mp = memplan_build(&arena, p, ops, pl, s, &sim, err, sizeof err);
      if (!mp) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
        schedule_free(s), sim_result_free(&sim);
        break;
      }
      if (show_memory) {
        if (pl->template_name) printf("pipeline template %s\n", pl->template_name);
        memplan_print(stdout, mp, p);
      }
      for (int r = 0; r < mp->nranks && device_memory; r++)
        if (mp->rank[r].total > device_memory) {
          fprintf(stderr, "pipec: error: pipeline rank %d needs %.2f GiB (parameters %.2f, optimizer %.2f, activations %.2f x %d microbatches),"
                          " more than --device-memory %.2f GiB; use more pipeline stages or tensor parallelism%s%s\n",
                  r, mp->rank[r].total / 1073741824.0, mp->rank[r].param_bytes / 1073741824.0, mp->rank[r].optim_bytes / 1073741824.0,
                  mp->rank[r].act_per_microbatch / 1073741824.0, mp->rank[r].slots, device_memory / 1073741824.0,
                  p->schedule == SCHED_GPIPE || p->schedule == SCHED_LOOPED_BFS ? ", a schedule that keeps fewer microbatches in flight (1f1b)" : "",
                  strcmp(p->precision, "bf16") ? ", or bf16" : "");
          status = 1;
        }
      schedule_free(s);
      sim_result_free(&sim);
    }
    if (status) p = NULL, diag.errors++;
  }
  if (!p && status) {
    arena_free(&arena);
    return status;
  }
  if (!p) {
    fprintf(stderr, "pipec: %d error%s in %s\n", diag.errors, diag.errors == 1 ? "" : "s", file);
    status = 1;
  } else if (show_memory || dump || dump_ops || dump_kernels || explain || dump_plan || plan_json || ro.dump || ro.grid || ro.csv_out || (ro.csv_in && !outdir) || ro.svg_out) {
    if (dump) program_dump(stdout, p);
    if (dump_ops) opgraph_dump(stdout, ops, p);
    if (dump_kernels) kernels_dump(stdout, kernels_fuse(&arena, ops, p), ops, p);
    if (explain) cost_explain_partition(stdout, p);
    if (dump_plan) plan_print(stdout, p);
    if (plan_json) {
      char err[512];
      if (plan_write_json(plan_json, p, err, sizeof err)) {
        fprintf(stderr, "pipec: error: %s\n", err);
        status = 1;
      }
    }
    if (!status && (ro.dump || ro.grid || ro.csv_out || ro.csv_in || ro.svg_out)) status = report_schedules(stdout, p, &ro);
  } else if (check) {
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    printf("%s: ok (model %s, %lld parameters, %d ranks: dp %d x tp %d x pp %d; checked in %.1f ms)\n", file, p->model_name,
           (long long)p->nparams, p->world, p->dp, p->tp, p->pp, ms);
  } else if (outdir) {
    bo.outdir = outdir, bo.tflops = ro.tflops, bo.device_memory = device_memory, bo.schedule_csv = ro.csv_in;
    status = build_program(p, ops, &bo);
  } else {
    fprintf(stderr, "pipec: %s checks out; nothing else was asked (use -o DIR to compile, or --check)\n", file);
    status = 2;
  }
  arena_free(&arena);
  return status;
}
