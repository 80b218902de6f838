#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda/device_math.h"
#include "cuda/kernels.h"

namespace cnnkernels::cuda {

namespace {

template <typename T>
__device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v) { return static_cast<T>(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

template <typename T, typename Acc>
__global__ void add_relu_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const Acc v = static_cast<Acc>(to_f(a[i])) + static_cast<Acc>(to_f(b[i]));
    out[i] = from_f<T>(v < Acc(0) ? Acc(0) : v);
  }
}

template <>
__global__ void add_relu_kernel<double, double>(const double* __restrict__ a, const double* __restrict__ b,
                                                double* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = a[i] + b[i];
    out[i] = v < 0.0 ? 0.0 : v;
  }
}

template <typename T, typename Acc>
cudaError_t launch(const void* a, const void* b, void* out, int64_t n, cudaStream_t s) {
  constexpr int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  const int grid = static_cast<int>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  add_relu_kernel<T, Acc><<<grid, threads, 0, s>>>(static_cast<const T*>(a), static_cast<const T*>(b),
                                                    static_cast<T*>(out), n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_add_relu(DType t, const void* a, const void* b, void* out, int64_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  switch (t) {
    case DType::F32: return launch<float, float>(a, b, out, n, s);
    case DType::F16: return launch<__half, float>(a, b, out, n, s);
    case DType::BF16: return launch<__nv_bfloat16, float>(a, b, out, n, s);
    case DType::F64: return launch<double, double>(a, b, out, n, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cnnkernels::cuda
