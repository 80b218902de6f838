#pragma once
// What the kernel sources need from the CUDA toolkit, in one place: the fp16/bf16 types, WMMA, dynamic shared memory,
// the launch syntax and the few runtime calls the launchers make. With CNNKERNELS_EMULATE (test builds compiled by a
// host C++ compiler, csrc/cuda/emu/) the same names come from emu/shim.h and the kernels run on CPU threads.
#include <cstdint>

#if defined(CNNKERNELS_EMULATE)
#include "cuda/emu/shim.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

// bf16 WMMA fragments exist from sm_80; the sm_75 build of the bf16 kernels uses the CUDA-core tile instead.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
#define CNNKERNELS_BF16_TC 1
#else
#define CNNKERNELS_BF16_TC 0
#endif

// kernel<<<grid, block, smem, stream>>>(args...), spelled so that the emulation can run it on threads.
#define CNNKERNELS_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)

namespace cnnkernels::cuda {

// Asynchronous global -> shared copies of Bytes = 4, 8 or 16 bytes (both addresses aligned to Bytes): cp.async from
// sm_80, which lets a block issue the next K chunk's loads and multiply the current one while they are in flight.
// `valid` false zero-fills the destination without reading src (src-size 0). The copies of a thread are grouped by
// async_commit(); async_wait<N>() returns once all but the N newest groups of this thread have landed, and a
// __syncthreads() after it makes them visible to the other threads. Before sm_80 the copy is a plain load and store,
// complete at once (the same code then runs as a synchronous prefetch into the other buffer).
template <int Bytes>
struct CopyUnit;
template <>
struct CopyUnit<4> {
  using type = unsigned int;
};
template <>
struct CopyUnit<8> {
  using type = uint2;
};
template <>
struct CopyUnit<16> {
  using type = uint4;
};

template <int Bytes>
__device__ __forceinline__ void async_copy(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int src_bytes = valid ? Bytes : 0;
  if constexpr (Bytes == 16) {  // .cg: 16-byte copies may bypass L1 (the weights and the gather are read once per SM)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(src), "r"(src_bytes) : "memory");
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(src), "n"(Bytes), "r"(src_bytes)
                 : "memory");
  }
#else
  using U = typename CopyUnit<Bytes>::type;
  *static_cast<U*>(dst) = valid ? *static_cast<const U*>(src) : U{};
#endif
}

__device__ __forceinline__ void async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ unsigned char* dyn_smem() {
  extern __shared__ __align__(128) unsigned char cnnk_dyn_smem[];
  return cnnk_dyn_smem;
}

namespace rt {

struct DeviceInfo {
  int sms;             // multiprocessors
  int64_t smem_optin;  // largest dynamic shared memory a block may opt in to
  bool async_copy;     // cp.async (sm_80 and later): async_copy overlaps the copies with the multiply
};

inline cudaError_t device_info(DeviceInfo& info) {
  int dev = 0, sms = 0, optin = 0, major = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  info = DeviceInfo{sms, optin, major >= 8};
  return e;
}

// Blocks may use more than 48 KiB of dynamic shared memory only after opting in, per kernel.
template <typename Kernel>
cudaError_t allow_smem(Kernel* kernel, int64_t bytes) {
  if (bytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

inline cudaError_t last_error() { return cudaGetLastError(); }

}  // namespace rt
}  // namespace cnnkernels::cuda
#endif
