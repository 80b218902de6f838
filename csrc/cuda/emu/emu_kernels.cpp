// Test build (tests/cuda_kernels/test_cuda_emulated.py): the CUDA kernel sources and their launchers compiled by the
// host compiler against the emulation in shim.h. Nothing here is part of the shipped libraries.
#define CNNKERNELS_EMULATE 1
#include "cuda/emu/shim.h"

#include "cuda/add_relu_kernel.cu"
#include "cuda/boxes_kernel.cu"
#include "cuda/conv2d_act_kernel.cu"
#include "cuda/dwsep_conv2d_kernel.cu"
#include "cuda/inception_block_kernel.cu"
#include "cuda/inverted_residual_kernel.cu"
#include "cuda/mbconv_kernel.cu"
#include "cuda/up_concat_conv_kernel.cu"

#define CNNKERNELS_EMU_API extern "C" __attribute__((visibility("default")))

// The emulated device: SM count (grid.y splitting) and the opt-in shared memory limit (resident A, IR tile size).
CNNKERNELS_EMU_API void cnnk_emu_configure(int sms, int64_t smem_optin) {
  cnnkernels::cuda::emu::g_config = cnnkernels::cuda::emu::Config{sms, smem_optin};
}

// 1: cp.async emulated asynchronously (sm_80 and later), 0: synchronous copies (the sm_75 build).
CNNKERNELS_EMU_API void cnnk_emu_async_copies(int on) { cnnkernels::cuda::emu::g_async_copies = on != 0; }

// grid.x, grid.y, dynamic shared memory bytes and the number of launches so far.
CNNKERNELS_EMU_API void cnnk_emu_last_launch(int64_t* out) {
  const auto& r = cnnkernels::cuda::emu::g_record;
  out[0] = r.grid_x;
  out[1] = r.grid_y;
  out[2] = r.smem;
  out[3] = r.launches;
}

// add_relu's launcher on raw pointers (dtype: cuda::DType), so that a test can place the output, not only the inputs,
// at any offset from a 16-byte boundary (the op's wrapper allocates an aligned output). Returns the cudaError_t.
CNNKERNELS_EMU_API int cnnk_emu_add_relu(int dtype, const void* a, const void* b, void* out, int64_t n) {
  return static_cast<int>(
      cnnkernels::cuda::launch_add_relu(static_cast<cnnkernels::cuda::DType>(dtype), a, b, out, n, nullptr));
}
