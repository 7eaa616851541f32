/* glibc functions the Glibc module does not export. */
#include <malloc.h>
