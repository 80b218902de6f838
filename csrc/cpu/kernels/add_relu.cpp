// add_relu over a contiguous range.
#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

template <typename T>
void add_relu_impl(const T* a, const T* b, T* out, int64_t n) {
  int64_t i = 0;
  for (; i + V <= n; i += V) store(out + i, vmax(load(a + i, V) + load(b + i, V), Vec(0.f)), V);
  if (i < n) {
    const int r = static_cast<int>(n - i);
    store(out + i, vmax(load(a + i, r) + load(b + i, r), Vec(0.f)), r);
  }
}

}  // namespace

void add_relu(DType t, const void* a, const void* b, void* out, int64_t n) {
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    add_relu_impl(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), n);
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
