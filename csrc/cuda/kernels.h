#pragma once
// Launchers for the CUDA kernels. Deliberately free of torch headers: the .cu files include only this and the CUDA
// runtime, which keeps nvcc fast; the .cpp wrappers hold the torch side (checks, allocation, stream, device guard).
#include <cuda_runtime_api.h>

#include <cstdint>

namespace cnnkernels::cuda {

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, F64 = 3 };

cudaError_t launch_add_relu(DType t, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream);

}  // namespace cnnkernels::cuda
