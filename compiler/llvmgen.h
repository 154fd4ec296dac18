/* llvmgen.h — machine code for the stage programs, through the LLVM C API,
 * and the link that makes them executables.
 *
 * Contract:
 *  - llvmgen_stage() turns a StageProgram (compiler/stagegen.h) into an
 *    LLVM module: one function per chunk and pass, pipec_step, and the
 *    device variant NAME_dev of each, calling d_X
 *    (runtime/kernels_dev.h) where the CPU variant calls k_X; the
 *    manifest string, the embedded blobs (each in its own section
 *    ".pipec.<name>", listed in the table pipec_blobs / pipec_nblobs) and a
 *    main that hands all of it to the runtime (prt_stage_main). The module
 *    is verified, optimised with the new pass manager ("default<O2>"),
 *    written as an object file by a target machine for the host, and, when
 *    ll_path is not NULL, as textual IR.
 *  - llvmgen_launch() makes the object of build/launch: the table of stage
 *    binaries by world rank, and a main that calls prt_launch_main.
 *  - link_executable() links an object with the runtime library into an
 *    executable, with the C compiler pipec was built with.
 * Every function returns 0, or -1 with a message in err.
 */
#ifndef PIPEC_LLVMGEN_H
#define PIPEC_LLVMGEN_H
#include <stddef.h>

#include "compiler/stagegen.h"

typedef struct Blob {
  const char *name; /* "kernels.cu", "kernels.sm_90.cubin", ... */
  const unsigned char *data;
  size_t len;
} Blob;

int llvmgen_stage(const StageProgram *sp, const char *module_name, const Blob *blobs, int nblobs, const char *ll_path,
                  const char *obj_path, char *err, size_t errlen);
int llvmgen_launch(const char *model, const char *const *binaries, int world, const char *ll_path, const char *obj_path, char *err,
                   size_t errlen);
int link_executable(const char *obj_path, const char *exe_path, char *err, size_t errlen);
/* "libLLVM 14.0.6, target x86_64-pc-linux-gnu" */
const char *llvmgen_describe(void);

#endif
