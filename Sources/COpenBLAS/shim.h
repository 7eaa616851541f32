#include <cblas.h>
/* OpenBLAS control functions (declared in cblas.h of OpenBLAS, repeated here
   so the module does not depend on which cblas.h the include path finds). */
char *openblas_get_corename(void);
char *openblas_get_config(void);
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);
