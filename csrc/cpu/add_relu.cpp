// add_relu: relu(input + residual), one pass over memory.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/checks.h"
#include "cpu/common.h"

namespace cnnkernels::cpu {

namespace {

at::Tensor add_relu_cpu(const at::Tensor& input, const at::Tensor& residual) {
  check_add_relu(input, residual);
  const auto fmt = output_memory_format(input);
  at::Tensor out = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (input.numel() == 0) return out;
  const at::Tensor x = input.contiguous(fmt), r = residual.contiguous(fmt);
  if (input.scalar_type() == at::kDouble) {  // fp64 exists for gradcheck; ATen computes it
    at::add_out(out, x, r).relu_();
    return out;
  }
  const auto dt = kernel_dtype(x);
  const int64_t es = x.element_size();
  const auto* xp = static_cast<const char*>(x.const_data_ptr());
  const auto* rp = static_cast<const char*>(r.const_data_ptr());
  auto* op = static_cast<char*>(out.data_ptr());
  const auto& k = kernels();
  // 64 KiB chunks: large enough to amortise the task, small enough to split a 1 MB tensor over both cores.
  at::parallel_for(0, x.numel(), 16384, [&](int64_t b, int64_t e) {
    k.add_relu(dt, xp + b * es, rp + b * es, op + b * es, e - b);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(cnnkernels, CPU, m) {
  m.impl("add_relu", &add_relu_cpu);
}

}  // namespace cnnkernels::cpu
