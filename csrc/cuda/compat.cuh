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

__device__ __forceinline__ unsigned char* dyn_smem() {
  extern __shared__ __align__(128) unsigned char cnnk_dyn_smem[];
  return cnnk_dyn_smem;
}

namespace rt {

struct DeviceInfo {
  int sms;             // multiprocessors
  int64_t smem_optin;  // largest dynamic shared memory a block may opt in to
};

inline cudaError_t device_info(DeviceInfo& info) {
  int dev = 0, sms = 0, optin = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  info = DeviceInfo{sms, optin};
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
