#pragma once
// Helpers shared by the CUDA op wrappers (torch side).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "cuda/kernels.h"

namespace cnnkernels::cuda {

inline DType cuda_dtype(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kBFloat16: return DType::BF16;
    case at::kHalf: return DType::F16;
    case at::kDouble: return DType::F64;
    default: TORCH_CHECK_TYPE(false, "cnnkernels: no CUDA kernel for dtype ", t.scalar_type());
  }
}

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "cnnkernels.", op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

}  // namespace cnnkernels::cuda
