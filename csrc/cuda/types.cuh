#pragma once
// The element types of the kernels and their accumulation types: fp32 accumulation for fp32/fp16/bf16, fp64 for fp64;
// whether the GEMM tiles of a type run on tensor cores (WMMA: fp16 from sm_70, bf16 from sm_80).
#include "cuda/compat.cuh"
#include "cuda/kernels.h"

namespace cnnkernels::cuda {

template <typename T>
struct Traits;
template <>
struct Traits<float> {
  using Acc = float;
  static constexpr bool tc = false;
};
template <>
struct Traits<double> {
  using Acc = double;
  static constexpr bool tc = false;
};
template <>
struct Traits<__half> {
  using Acc = float;
  static constexpr bool tc = true;
};
template <>
struct Traits<__nv_bfloat16> {
  using Acc = float;
  static constexpr bool tc = CNNKERNELS_BF16_TC;
};
template <typename T>
using acc_t = typename Traits<T>::Acc;

template <typename T>
__device__ __forceinline__ acc_t<T> to_acc(T v) { return v; }
template <>
__device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) { return v; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
__device__ __forceinline__ T zero_of() { return from_acc<T>(acc_t<T>(0)); }

// Calls f(T{}) for the element type of `t`: `dispatch_dtype(t, [&](auto tag) { return run<decltype(tag)>(...); })`.
template <class F>
cudaError_t dispatch_dtype(DType t, F&& f) {
  switch (t) {
    case DType::F32: return f(float{});
    case DType::F16: return f(__half{});
    case DType::BF16: return f(__nv_bfloat16{});
    case DType::F64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cnnkernels::cuda
