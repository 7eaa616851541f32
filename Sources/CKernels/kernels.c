// Every kernel template (gate_kernels.h, sum_kernels.h, panel_gemm.h, winograd_kernels.h,
// optimizer_kernels.h) compiled once per
// instruction set: AVX2 + FMA, then AVX-512 (see ckernels.h, vector_isa.h).
// bf16.c holds the rounding kernels, which differ per set in more than width.
#include "ckernels.h"
#include <stdlib.h>

#if defined(WF_HAVE_X86_KERNELS)
#define WF_ISA_AVX2
#include "vector_isa.h"
#include "gate_kernels.h"
#include "sum_kernels.h"
#include "panel_gemm.h"
#include "winograd_kernels.h"
#include "optimizer_kernels.h"
#undef WF_ISA_AVX2

#define WF_ISA_AVX512
#include "vector_isa.h"
#include "gate_kernels.h"
#include "sum_kernels.h"
#include "panel_gemm.h"
#include "winograd_kernels.h"
#include "optimizer_kernels.h"
#undef WF_ISA_AVX512
#endif
