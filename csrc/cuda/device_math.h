#pragma once
// Per-element math shared by the CUDA kernels, also compiled for the host so CPU-side tests exercise the same code.
#if defined(__CUDACC__)
#define CNNK_HD __host__ __device__ __forceinline__
#else
#define CNNK_HD inline
#endif

namespace cnnkernels::cuda {

// relu that propagates NaN like torch.relu (a NaN compares false with 0 and is returned as is).
CNNK_HD float relu_nan(float v) { return v < 0.f ? 0.f : v; }

}  // namespace cnnkernels::cuda
