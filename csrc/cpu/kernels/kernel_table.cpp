// This ISA build's KernelTable: dispatch.cpp and probe.cpp see a build only through it, and take each family from
// whichever build serves that family best. The kernels are in one file per family (add_relu.cpp, conv.cpp,
// depthwise.cpp, maxpool.cpp, fingerprint.cpp).
#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {

const KernelTable& table() {
#define CNNKERNELS_STR2(x) #x
#define CNNKERNELS_STR(x) CNNKERNELS_STR2(x)
  static const KernelTable t{CNNKERNELS_STR(CPU_CAPABILITY), NR, add_relu, conv_rows, depthwise_rows,
                             maxpool3x3_rows, fingerprint};
  return t;
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
