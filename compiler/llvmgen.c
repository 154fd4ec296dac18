/* llvmgen.c — see llvmgen.h. */
#include "compiler/llvmgen.h"

#include <errno.h>
#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <llvm/Config/llvm-config.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pipec_rtconfig.h"

extern char **environ;

static int fail(char *err, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, n, fmt, ap);
  va_end(ap);
  return -1;
}

static LLVMTargetMachineRef host_machine(char *err, size_t errlen, char **triple_out) {
  static int inited;
  if (!inited) {
    LLVMInitializeNativeTarget();
    LLVMInitializeNativeAsmPrinter();
    inited = 1;
  }
  char *triple = LLVMGetDefaultTargetTriple(), *msg = NULL;
  LLVMTargetRef t;
  if (LLVMGetTargetFromTriple(triple, &t, &msg)) {
    fail(err, errlen, "LLVM has no target for %s: %s", triple, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    return NULL;
  }
  /* the host's CPU: the same machine (or one like it) runs the stages */
  char *cpu = LLVMGetHostCPUName(), *features = LLVMGetHostCPUFeatures();
  LLVMTargetMachineRef tm =
      LLVMCreateTargetMachine(t, triple, cpu, features, LLVMCodeGenLevelDefault, LLVMRelocPIC, LLVMCodeModelDefault);
  LLVMDisposeMessage(cpu), LLVMDisposeMessage(features);
  *triple_out = triple;
  return tm;
}

const char *llvmgen_describe(void) {
  static char b[160];
  char *triple = LLVMGetDefaultTargetTriple();
  snprintf(b, sizeof b, "LLVM %s, target %s", LLVM_VERSION_STRING, triple);
  LLVMDisposeMessage(triple);
  return b;
}

typedef struct Emit {
  LLVMContextRef cx;
  LLVMModuleRef m;
  LLVMBuilderRef b;
  LLVMTypeRef i8, i8p, i32, i64, f32, vd;
} Emit;

static LLVMTypeRef sig_type(Emit *E, char c) {
  switch (c) {
  case 'i':
  case 'm': return E->i32;
  case 'l': return E->i64;
  case 'f': return E->f32;
  default: return E->i8p; /* p c k */
  }
}

/* the callee, declared from its signature letters the first time */
static LLVMValueRef callee(Emit *E, const char *name, const char *sig, LLVMTypeRef *fty) {
  LLVMTypeRef ps[32];
  int n = (int)strlen(sig);
  for (int i = 0; i < n; i++) ps[i] = sig_type(E, sig[i]);
  *fty = LLVMFunctionType(E->vd, ps, (unsigned)n, 0);
  LLVMValueRef f = LLVMGetNamedFunction(E->m, name);
  if (!f) {
    f = LLVMAddFunction(E->m, name, *fty);
    LLVMSetLinkage(f, LLVMExternalLinkage);
  }
  return f;
}

static LLVMValueRef const_bytes(Emit *E, const char *name, const char *section, const void *data, size_t len, int nul) {
  LLVMValueRef init = LLVMConstStringInContext(E->cx, (const char *)data, (unsigned)len, !nul);
  LLVMValueRef g = LLVMAddGlobal(E->m, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMExternalLinkage);
  if (section) LLVMSetSection(g, section);
  LLVMSetAlignment(g, 16);
  return g;
}

static LLVMValueRef as_i8p(Emit *E, LLVMValueRef g) { return LLVMConstBitCast(g, E->i8p); }

/* The function, or (dev) its device variant NAME_dev: the same calls with
 * each CPU kernel k_X replaced by its device twin d_X (runtime/kernels_dev.h,
 * same signature, device pointers) and each chunk function by its variant;
 * the runtime's prt_* calls are the same in both (they look at the device). */
static void emit_function(Emit *E, const StageProgram *sp, const SFunc *f, LLVMValueRef *consts, int dev) {
  LLVMTypeRef ps[4] = {E->i8p, E->i8p, E->i8p, E->i32};
  LLVMTypeRef fty = LLVMFunctionType(E->vd, ps, f->is_step ? 2 : 4, 0);
  char fname[160], cname[160];
  snprintf(fname, sizeof fname, "%s%s", f->name, dev ? "_dev" : "");
  LLVMValueRef fn = LLVMGetNamedFunction(E->m, fname);
  if (!fn) fn = LLVMAddFunction(E->m, fname, fty);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), arena = LLVMGetParam(fn, 1);
  LLVMValueRef slot = f->is_step ? NULL : LLVMGetParam(fn, 2), mb = f->is_step ? NULL : LLVMGetParam(fn, 3);
  LLVMSetValueName2(ctx, "ctx", 3), LLVMSetValueName2(arena, "arena", 5);
  if (slot) LLVMSetValueName2(slot, "slot", 4), LLVMSetValueName2(mb, "mb", 2);
  LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(E->cx, fn, "entry");
  LLVMPositionBuilderAtEnd(E->b, bb);
  const char *module = NULL; /* device variant: the .pipe module the kernels run for, told to the runtime on change */
  for (int i = 0; i < f->ncall; i++) {
    const SCall *c = &f->call[i];
    if (dev && !strncmp(c->fn, "k_", 2) && c->what && *c->what && (!module || strcmp(module, c->what))) {
      LLVMTypeRef mty;
      LLVMValueRef mf = callee(E, "prt_dev_op", "cp", &mty), margs[2] = {ctx, LLVMBuildGlobalStringPtr(E->b, c->what, "module")};
      LLVMBuildCall2(E->b, mty, mf, margs, 2, "");
      module = c->what;
    }
    LLVMTypeRef cty;
    LLVMValueRef cf;
    LLVMValueRef args[32];
    if (!strncmp(c->fn, "pipec_", 6)) { /* a chunk function called from the step */
      LLVMTypeRef cps[4] = {E->i8p, E->i8p, E->i8p, E->i32};
      cty = LLVMFunctionType(E->vd, cps, 4, 0);
      snprintf(cname, sizeof cname, "%s%s", c->fn, dev ? "_dev" : "");
      cf = LLVMGetNamedFunction(E->m, cname);
      if (!cf) cf = LLVMAddFunction(E->m, cname, cty);
    } else {
      snprintf(cname, sizeof cname, "%s", c->fn);
      if (dev && !strncmp(c->fn, "k_", 2)) cname[0] = 'd';
      cf = callee(E, cname, c->sig, &cty);
    }
    for (int k = 0; k < c->narg; k++) {
      const SArg *a = &c->arg[k];
      switch (a->kind) {
      case 'c': args[k] = ctx; break;
      case 'm': args[k] = mb ? mb : LLVMConstInt(E->i32, 0, 0); break;
      case 'i': args[k] = LLVMConstInt(E->i32, (unsigned long long)a->v, 1); break;
      case 'l': args[k] = LLVMConstInt(E->i64, (unsigned long long)a->v, 1); break;
      case 'f': args[k] = LLVMConstReal(E->f32, a->f); break;
      case 'k': args[k] = consts[a->v]; break;
      default: /* 'p' */
        if (a->v < 0) args[k] = LLVMConstNull(E->i8p);
        else {
          LLVMValueRef base = a->base == SB_SLOT && slot ? slot : arena;
          LLVMValueRef idx = LLVMConstInt(E->i64, (unsigned long long)a->v, 0);
          args[k] = a->v ? LLVMBuildInBoundsGEP2(E->b, E->i8, base, &idx, 1, "") : base;
        }
      }
    }
    LLVMBuildCall2(E->b, cty, cf, args, (unsigned)c->narg, "");
  }
  LLVMBuildRetVoid(E->b);
  (void)sp;
}

static int finish(Emit *E, LLVMTargetMachineRef tm, const char *ll_path, const char *obj_path, char *err, size_t errlen) {
  char *msg = NULL;
  if (LLVMVerifyModule(E->m, LLVMReturnStatusAction, &msg)) {
    fail(err, errlen, "internal error: the generated LLVM module does not verify: %s", msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return -1;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(E->m, "default<O2>", tm, po);
  LLVMDisposePassBuilderOptions(po);
  if (e) {
    char *s = LLVMGetErrorMessage(e);
    fail(err, errlen, "LLVM optimisation failed: %s", s);
    LLVMDisposeErrorMessage(s);
    return -1;
  }
  if (ll_path && LLVMPrintModuleToFile(E->m, ll_path, &msg)) {
    fail(err, errlen, "cannot write %s: %s", ll_path, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return -1;
  }
  if (LLVMTargetMachineEmitToFile(tm, E->m, (char *)obj_path, LLVMObjectFile, &msg)) {
    fail(err, errlen, "cannot write %s: %s", obj_path, msg ? msg : "?");
    LLVMDisposeMessage(msg);
    return -1;
  }
  return 0;
}

static int begin(Emit *E, const char *name, LLVMTargetMachineRef *tm, char *err, size_t errlen) {
  char *triple = NULL;
  *tm = host_machine(err, errlen, &triple);
  if (!*tm) return -1;
  E->cx = LLVMContextCreate();
  E->m = LLVMModuleCreateWithNameInContext(name, E->cx);
  LLVMSetTarget(E->m, triple);
  LLVMTargetDataRef td = LLVMCreateTargetDataLayout(*tm);
  char *dl = LLVMCopyStringRepOfTargetData(td);
  LLVMSetDataLayout(E->m, dl);
  LLVMDisposeMessage(dl);
  LLVMDisposeTargetData(td);
  LLVMDisposeMessage(triple);
  E->b = LLVMCreateBuilderInContext(E->cx);
  E->i8 = LLVMInt8TypeInContext(E->cx), E->i8p = LLVMPointerType(E->i8, 0);
  E->i32 = LLVMInt32TypeInContext(E->cx), E->i64 = LLVMInt64TypeInContext(E->cx);
  E->f32 = LLVMFloatTypeInContext(E->cx), E->vd = LLVMVoidTypeInContext(E->cx);
  return 0;
}

static void end(Emit *E, LLVMTargetMachineRef tm) {
  LLVMDisposeBuilder(E->b);
  LLVMDisposeModule(E->m);
  LLVMContextDispose(E->cx);
  LLVMDisposeTargetMachine(tm);
}

/* int main(int argc, char **argv) { return FN(argc, argv, A, B); } */
static void emit_main(Emit *E, const char *fn_name, LLVMValueRef a3, LLVMTypeRef t3, LLVMValueRef a4, LLVMTypeRef t4) {
  LLVMTypeRef i8pp = LLVMPointerType(E->i8p, 0);
  LLVMTypeRef mps[2] = {E->i32, i8pp};
  LLVMValueRef mainf = LLVMAddFunction(E->m, "main", LLVMFunctionType(E->i32, mps, 2, 0));
  LLVMPositionBuilderAtEnd(E->b, LLVMAppendBasicBlockInContext(E->cx, mainf, "entry"));
  LLVMTypeRef rps[4] = {E->i32, i8pp, t3, t4};
  LLVMTypeRef rty = LLVMFunctionType(E->i32, rps, 4, 0);
  LLVMValueRef rf = LLVMAddFunction(E->m, fn_name, rty);
  LLVMValueRef args[4] = {LLVMGetParam(mainf, 0), LLVMGetParam(mainf, 1), a3, a4};
  LLVMBuildRet(E->b, LLVMBuildCall2(E->b, rty, rf, args, 4, "status"));
}

int llvmgen_stage(const StageProgram *sp, const char *module_name, const Blob *blobs, int nblobs, const char *ll_path,
                  const char *obj_path, char *err, size_t errlen) {
  Emit E;
  LLVMTargetMachineRef tm;
  if (begin(&E, module_name, &tm, err, errlen)) return -1;
  /* the attention geometries */
  LLVMValueRef *consts = calloc((size_t)sp->nconst + 1, sizeof *consts);
  for (int i = 0; i < sp->nconst; i++) {
    LLVMValueRef v[16];
    for (int k = 0; k < sp->consts[i].n; k++) v[k] = LLVMConstInt(E.i32, (unsigned long long)(int64_t)sp->consts[i].v[k], 1);
    LLVMValueRef init = LLVMConstArray(E.i32, v, (unsigned)sp->consts[i].n);
    char name[32];
    snprintf(name, sizeof name, "pipec_attn%d", i);
    LLVMValueRef g = LLVMAddGlobal(E.m, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init), LLVMSetGlobalConstant(g, 1), LLVMSetLinkage(g, LLVMPrivateLinkage);
    consts[i] = as_i8p(&E, g);
  }
  /* chunk functions first (the step calls them), then the step */
  for (int i = 0; i < sp->nfunc; i++) emit_function(&E, sp, &sp->func[i], consts, 0);
  for (int i = 0; i < sp->nfunc; i++) emit_function(&E, sp, &sp->func[i], consts, 1);
  free(consts);
  /* the manifest and the blobs */
  LLVMValueRef man = const_bytes(&E, "pipec_manifest", ".pipec.manifest", sp->manifest, strlen(sp->manifest), 1);
  LLVMTypeRef ent_f[3] = {E.i8p, E.i8p, E.i64};
  LLVMTypeRef ent = LLVMStructTypeInContext(E.cx, ent_f, 3, 0);
  LLVMValueRef *rows = calloc((size_t)nblobs + 1, sizeof *rows);
  for (int i = 0; i < nblobs; i++) {
    char sym[64], sec[300], nm[64];
    snprintf(sym, sizeof sym, "pipec_blob%d", i);
    snprintf(sec, sizeof sec, ".pipec.%s", blobs[i].name);
    snprintf(nm, sizeof nm, "pipec_blob%d_name", i);
    LLVMValueRef d = const_bytes(&E, sym, sec, blobs[i].data, blobs[i].len, 0);
    LLVMValueRef n = const_bytes(&E, nm, NULL, blobs[i].name, strlen(blobs[i].name), 1);
    LLVMSetLinkage(n, LLVMPrivateLinkage);
    LLVMValueRef f3[3] = {as_i8p(&E, n), as_i8p(&E, d), LLVMConstInt(E.i64, blobs[i].len, 0)};
    rows[i] = LLVMConstNamedStruct(ent, f3, 3);
  }
  LLVMValueRef table = LLVMConstArray(ent, rows, (unsigned)nblobs);
  free(rows);
  LLVMValueRef tg = LLVMAddGlobal(E.m, LLVMTypeOf(table), "pipec_blobs");
  LLVMSetInitializer(tg, table), LLVMSetGlobalConstant(tg, 1);
  LLVMValueRef cnt = LLVMAddGlobal(E.m, E.i32, "pipec_nblobs");
  LLVMSetInitializer(cnt, LLVMConstInt(E.i32, (unsigned)nblobs, 0)), LLVMSetGlobalConstant(cnt, 1);
  /* main: prt_stage_main(argc, argv, manifest, step) */
  LLVMValueRef step = LLVMGetNamedFunction(E.m, "pipec_step");
  emit_main(&E, "prt_stage_main", as_i8p(&E, man), E.i8p, step, LLVMTypeOf(step));
  int rc = finish(&E, tm, ll_path, obj_path, err, errlen);
  end(&E, tm);
  return rc;
}

int llvmgen_launch(const char *model, const char *const *binaries, int world, const char *ll_path, const char *obj_path, char *err,
                   size_t errlen) {
  Emit E;
  LLVMTargetMachineRef tm;
  if (begin(&E, "launch", &tm, err, errlen)) return -1;
  /* "model\nworld\nbinary of rank 0\n...": one string the runtime splits */
  size_t len = strlen(model) + 32;
  for (int r = 0; r < world; r++) len += strlen(binaries[r]) + 1;
  char *text = malloc(len), *p = text;
  p += sprintf(p, "%s\n%d\n", model, world);
  for (int r = 0; r < world; r++) p += sprintf(p, "%s\n", binaries[r]);
  LLVMValueRef t = const_bytes(&E, "pipec_launch_table", ".pipec.launch", text, strlen(text), 1);
  free(text);
  emit_main(&E, "prt_launch_main", as_i8p(&E, t), E.i8p, LLVMConstNull(E.i8p), E.i8p);
  int rc = finish(&E, tm, ll_path, obj_path, err, errlen);
  end(&E, tm);
  return rc;
}

int link_executable(const char *obj_path, const char *exe_path, char *err, size_t errlen) {
  /* cc -o EXE OBJ <runtime libraries>, split on spaces (the configured list has no quoting) */
  const char *cc = getenv("PIPEC_CC") ? getenv("PIPEC_CC") : PIPEC_RT_CC;
  char *libs = strdup(getenv("PIPEC_RT_LIBS") ? getenv("PIPEC_RT_LIBS") : PIPEC_RT_LIBS);
  char *argv[256];
  int n = 0;
  argv[n++] = (char *)cc;
  argv[n++] = "-o";
  argv[n++] = (char *)exe_path;
  argv[n++] = (char *)obj_path;
  for (char *save = NULL, *tok = strtok_r(libs, " ;", &save); tok && n < 250; tok = strtok_r(NULL, " ;", &save)) argv[n++] = tok;
  argv[n] = NULL;
  /* the linker's complaints go to a temporary file and into err */
  char logp[] = "/tmp/pipec-link-XXXXXX";
  int lfd = mkstemp(logp);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (lfd >= 0) posix_spawn_file_actions_adddup2(&fa, lfd, 1), posix_spawn_file_actions_adddup2(&fa, lfd, 2);
  pid_t pid;
  int rc = posix_spawnp(&pid, cc, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  int status = -1;
  if (rc) fail(err, errlen, "cannot run the linker '%s': %s", cc, strerror(rc));
  else {
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
      char log[1024] = "";
      if (lfd >= 0) {
        ssize_t k = pread(lfd, log, sizeof log - 1, 0);
        log[k > 0 ? k : 0] = 0;
      }
      fail(err, errlen, "linking %s failed (%s %s ... %s): %s", exe_path, cc, obj_path, PIPEC_RT_LIBS, log);
      rc = -1;
    }
  }
  if (lfd >= 0) close(lfd), unlink(logp);
  free(libs);
  return rc ? -1 : 0;
}
