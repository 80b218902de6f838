// The cnnkernels operator library. Schemas are defined here once (generated from cnnkernels/ops.schema); each kernel
// file registers its own backend implementation with TORCH_LIBRARY_IMPL at its bottom.
#include <torch/library.h>

TORCH_LIBRARY(cnnkernels, m) {
#include "cnnkernels_schemas.inc"
}
