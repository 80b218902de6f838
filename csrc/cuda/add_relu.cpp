// CUDA registration of add_relu: validation, allocation, device guard and stream; the kernel is in add_relu_kernel.cu.
#include <torch/library.h>

#include "common/checks.h"
#include "cuda/common.h"

namespace cnnkernels::cuda {

namespace {

at::Tensor add_relu_cuda(const at::Tensor& input, const at::Tensor& residual) {
  check_add_relu(input, residual);
  const DeviceGuard guard(input.device());
  const auto fmt = output_memory_format(input);
  at::Tensor out = at::empty(input.sizes(), input.options().memory_format(fmt));
  if (input.numel() == 0) return out;
  const at::Tensor x = input.contiguous(fmt), r = residual.contiguous(fmt);
  check_launch(launch_add_relu(cuda_dtype(x), x.const_data_ptr(), r.const_data_ptr(), out.data_ptr(), x.numel(),
                               current_stream()),
               "add_relu");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(CNNKERNELS_IMPL_NS, CNNKERNELS_IMPL_KEY, m) {
  m.impl("add_relu", &add_relu_cuda);
}

}  // namespace cnnkernels::cuda
