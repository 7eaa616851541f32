// Row sums for AVX2 + FMA and for AVX-512 (see ckernels.h).
#include "ckernels.h"

#if defined(WF_HAVE_X86_KERNELS)
#define WF_ISA_AVX2
#include "vector_isa.h"
#include "sum_kernels.h"
#undef WF_ISA_AVX2

#define WF_ISA_AVX512
#include "vector_isa.h"
#include "sum_kernels.h"
#undef WF_ISA_AVX512
#endif
