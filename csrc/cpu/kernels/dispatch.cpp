#include <ATen/Version.h>

#include "cpu/kernels/kernel_table.h"

namespace cnnkernels::cpu {

namespace {
// torch's choice already honours ATEN_CPU_CAPABILITY and the CPU's features; we double-check the features because our
// AVX-512 code needs the same subset (F/BW/VL/DQ) and must never run where it would fault.
const KernelTable& choose() {
  const std::string cap = at::get_cpu_capability();
#if defined(CNNKERNELS_HAVE_AVX512) && (defined(__GNUC__) || defined(__clang__))
  if (cap == "AVX512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return AVX512::table();
#endif
#if defined(CNNKERNELS_HAVE_AVX2) && (defined(__GNUC__) || defined(__clang__))
  if ((cap == "AVX512" || cap == "AVX2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c"))
    return AVX2::table();
#endif
  return DEFAULT::table();
}
}  // namespace

const KernelTable& kernels() {
  static const KernelTable& t = choose();
  return t;
}

}  // namespace cnnkernels::cpu

// Lets Python (cnnkernels.info) ask which ISA the kernels use without a torch op for it.
extern "C" __attribute__((visibility("default"))) const char* cnnkernels_cpu_isa() {
  return cnnkernels::cpu::kernels().isa;
}
extern "C" __attribute__((visibility("default"))) const char* cnnkernels_cpu_isas_compiled() {
  return CNNKERNELS_ISAS;
}
