#include "cuda/device_math.h"
#include "cuda/kernels.h"
#include "cuda/tiling.h"
#include "cuda/types.cuh"

namespace cnnkernels::cuda {

namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_relu_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = from_acc<T>(act_apply(Act::ReLU, to_acc(a[i]) + to_acc(b[i])));
}

template <typename T>
cudaError_t launch_add_relu_t(const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  const int64_t blocks = ceil_div(n, kThreads);
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  auto* kernel = &add_relu_kernel<T>;
  CNNKERNELS_LAUNCH(kernel, dim3(grid), dim3(kThreads), 0, stream, static_cast<const T*>(a), static_cast<const T*>(b),
              static_cast<T*>(out), n);
  return rt::last_error();
}

}  // namespace

cudaError_t launch_add_relu(DType t, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(t, [&](auto tag) { return launch_add_relu_t<decltype(tag)>(a, b, out, n, stream); });
}

}  // namespace cnnkernels::cuda
