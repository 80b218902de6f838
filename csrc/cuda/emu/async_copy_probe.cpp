// Test build (tests/cuda_kernels/test_cuda_emulated.py, test_emulated_cp_async_*): one small kernel that uses the
// asynchronous copies of compat.cuh correctly, and in the ways that are wrong on a GPU, run through the emulation of
// shim.h. The wrong ways must show poison in the output or a fault, or the emulated runs of the GEMM kernels could not
// be trusted to catch them. Only the CUDA headers are needed (no torch); loaded with ctypes.
#define CNNKERNELS_EMULATE 1
#include "cuda/compat.cuh"

namespace {

using namespace cnnkernels::cuda;

constexpr int kN = 64;  // threads; shared memory: two buffers of kN floats

enum Mode : int {
  kCorrect = 0,            // copy, commit, wait, barrier, read a neighbour's element
  kNoWait = 1,             // the thread reads its own copy's destination without waiting for it
  kNoBarrier = 2,          // the barrier after the wait is missing (a neighbour's copy may not have landed)
  kWaitLeavesNewest = 3,   // two groups, async_wait<1>: the first landed, the second (read by its thread) pending
  kOverwriteWhileRead = 4, // a buffer is re-issued without the barrier that orders it after the others' reads
  kExitPending = 5,        // the thread exits with its copy still pending
  kZeroFill = 6,           // odd threads copy with valid = false: zeros
};

__global__ void probe_kernel(const float* in, float* out, int mode) {
  float* buf = reinterpret_cast<float*>(dyn_smem());
  const int t = static_cast<int>(threadIdx.x), nb = (t + 1) % kN;
  switch (mode) {
    case kCorrect:
    case kZeroFill:
      async_copy<4>(buf + t, in + t, mode == kCorrect || t % 2 == 0);
      async_commit();
      async_wait<0>();
      __syncthreads();
      out[t] = buf[nb];
      break;
    case kNoWait:
      async_copy<4>(buf + t, in + t, true);
      async_commit();
      out[t] = buf[t];
      async_wait<0>();
      break;
    case kNoBarrier:
      async_copy<4>(buf + t, in + t, true);
      async_commit();
      async_wait<0>();
      out[t] = buf[nb];
      break;
    case kWaitLeavesNewest:
      async_copy<4>(buf + t, in + t, true);
      async_commit();
      async_copy<4>(buf + kN + t, in + kN + t, true);
      async_commit();
      async_wait<1>();
      __syncthreads();
      out[t] = buf[nb];
      out[kN + t] = buf[kN + t];
      async_wait<0>();
      break;
    case kOverwriteWhileRead:
      async_copy<4>(buf + t, in + t, true);
      async_commit();
      async_wait<0>();
      __syncthreads();
      async_copy<4>(buf + t, in + kN + t, true);  // needs a __syncthreads() before it: others still read buf
      async_commit();
      out[t] = buf[nb];
      __syncthreads();
      async_wait<0>();
      break;
    case kExitPending:
      async_copy<4>(buf + t, in + t, true);
      async_commit();
      out[t] = 0.0f;
      break;
  }
}

}  // namespace

// Runs the probe in `mode` on kN threads, in[2 * kN] -> out[2 * kN]; async: emulate cp.async (1) or synchronous copies
// (0, the sm_75 build). Returns the launch's error code (0: success).
extern "C" __attribute__((visibility("default"))) int cnnk_probe_async_copy(const float* in, float* out, int mode,
                                                                           int async) {
  emu::g_async_copies = async != 0;
  CNNKERNELS_LAUNCH(probe_kernel, dim3(1), dim3(kN), 2 * kN * sizeof(float), nullptr, in, out, mode);
  emu::g_async_copies = true;
  return static_cast<int>(rt::last_error());
}
