#pragma once
// Host emulation of the CUDA features the kernels use, so that the kernel sources (csrc/cuda/*_kernel.cu) compile with
// a host C++ compiler (-DCNNKERNELS_EMULATE) and run on CPU tensors in tests, on machines without a GPU:
//   - every CUDA thread of a block is a fiber (ucontext) on the calling thread; __syncthreads switches to the next
//     one, and a block advances barrier phase by barrier phase, its threads visited in ascending order in one phase and
//     descending order in the next (so a missing barrier between a write and another thread's read shows up). A
//     barrier that some threads of the block never reach (divergent __syncthreads) is reported as a fault;
//   - dynamic shared memory is a buffer filled with 0x7f bytes before every block (NaN for fp16, huge for the other
//     types: a read of shared memory the kernel did not write shows in the output), followed by a canary (a write
//     past the planned size is reported);
//   - nvcuda::wmma: fragments hold the whole 16x16 tile in every lane; load/mma/store follow the documented semantics
//     and check its preconditions (32-byte aligned pointers, ldm a multiple of 16 bytes);
//   - cp.async (compat.cuh's async_copy / async_commit / async_wait): a copy poisons its destination when issued and
//     is queued per thread; async_wait<N> performs the thread's groups except the N newest, and a copy still queued
//     when its thread exits is reported as a fault. So reading a buffer before waiting for it, reading another thread's
//     copies without a barrier after its wait, or issuing into a buffer that another thread still reads shows as
//     poison in the output. g_async_copies = false makes the copies synchronous instead, and the device one without
//     cp.async (rt::DeviceInfo::async_copy): the sm_75 build's behaviour;
//   - the runtime calls of compat.cuh (device attributes: configurable, see cnnk_emu_configure).
// Not emulated: warps running in lockstep, memory-model effects, tensor-core rounding, performance.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <ucontext.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <type_traits>
#include <vector>

#undef __forceinline__
#define __forceinline__ inline
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif
#define CNNKERNELS_BF16_TC 1

namespace cnnkernels::cuda::emu {

inline uint3 g_thread{};  // threadIdx of the fiber running now
inline uint3 g_block{};
inline dim3 g_grid, g_block_dim;
inline unsigned char* g_smem = nullptr;
inline int g_fault = 0;
inline cudaError_t g_last = cudaSuccess;

struct Config {
  int sms = 4;
  int64_t smem_optin = 99 * 1024;
};
inline Config g_config;

// What the last launch asked for (read by the tests through cnnk_emu_last_launch).
struct LaunchRecord {
  int64_t grid_x, grid_y, smem, launches;
};
inline LaunchRecord g_record{};

inline void fault(cudaError_t e, const char* what) {
  if (g_fault == 0) {
    g_fault = static_cast<int>(e);
    std::fprintf(stderr, "cnnk emu fault: %s\n", what);
  }
}

// The emulated device's copy engine: true: cp.async semantics (sm_80 and later), false: synchronous copies (sm_75).
inline bool g_async_copies = true;

struct PendingCopy {
  void* dst;
  const void* src;  // null: zero-fill
  int bytes;
};
// One thread's cp.async state: copies issued since its last commit, and its committed groups, oldest first.
struct CopyQueue {
  std::vector<PendingCopy> open;
  std::deque<std::vector<PendingCopy>> groups;
  bool empty() const {
    for (const auto& g : groups)
      if (!g.empty()) return false;
    return open.empty();
  }
};
inline std::vector<CopyQueue> g_copies;  // per thread of the running block

enum class FiberState { Runnable, AtBarrier, Done };
struct Fiber {
  ucontext_t ctx;
  FiberState state;
};
constexpr size_t kStack = 256 * 1024;
inline ucontext_t g_main;
inline std::vector<Fiber> g_fibers;
inline std::vector<char> g_stacks;
inline unsigned g_current = 0;
inline const std::function<void()>* g_body = nullptr;

inline void fiber_entry() {
  (*g_body)();
  g_fibers[g_current].state = FiberState::Done;  // returning resumes g_main (uc_link)
}

inline void barrier() {
  Fiber& f = g_fibers[g_current];
  f.state = FiberState::AtBarrier;
  swapcontext(&f.ctx, &g_main);
}

template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, const A&... args) {
  static std::mutex mu;
  const std::lock_guard<std::mutex> lock(mu);
  if (static_cast<int64_t>(smem) > g_config.smem_optin) return cudaErrorInvalidValue;
  const unsigned nt = block.x * block.y * block.z;
  g_grid = grid;
  g_block_dim = block;
  g_fault = 0;
  g_record = LaunchRecord{grid.x, grid.y, static_cast<int64_t>(smem), g_record.launches + 1};
  constexpr size_t kCanary = 256;
  std::vector<unsigned char> buf(smem + kCanary + 128);
  g_smem = buf.data() + (128 - reinterpret_cast<uintptr_t>(buf.data()) % 128) % 128;
  const std::function<void()> body = [&] { kernel(args...); };
  g_body = &body;
  g_fibers.resize(nt);
  g_copies.assign(nt, CopyQueue{});
  if (g_stacks.size() < nt * kStack) g_stacks.resize(nt * kStack);
  for (unsigned z = 0; z < grid.z && !g_fault; ++z)
    for (unsigned y = 0; y < grid.y && !g_fault; ++y)
      for (unsigned x = 0; x < grid.x && !g_fault; ++x) {
        std::memset(g_smem, 0x7f, smem);
        std::memset(g_smem + smem, 0xa5, kCanary);
        g_block = uint3{x, y, z};
        for (unsigned t = 0; t < nt; ++t) {
          Fiber& f = g_fibers[t];
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = g_stacks.data() + t * kStack;
          f.ctx.uc_stack.ss_size = kStack;
          f.ctx.uc_link = &g_main;
          makecontext(&f.ctx, fiber_entry, 0);
          f.state = FiberState::Runnable;
        }
        for (bool descending = false;; descending = !descending) {  // one barrier phase per round
          unsigned at_barrier = 0, done = 0;
          for (unsigned i = 0; i < nt; ++i) {
            const unsigned t = descending ? nt - 1 - i : i;
            Fiber& f = g_fibers[t];
            if (f.state == FiberState::Done) {
              ++done;
              continue;
            }
            f.state = FiberState::Runnable;
            g_current = t;
            g_thread = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            swapcontext(&g_main, &f.ctx);
            (f.state == FiberState::AtBarrier ? at_barrier : done) += 1;
          }
          if (at_barrier == 0) break;
          if (done != 0) {
            fault(cudaErrorLaunchFailure, "__syncthreads not reached by every thread of the block");
            break;
          }
        }
        for (CopyQueue& q : g_copies)
          if (!q.empty()) {
            fault(cudaErrorLaunchFailure, "cp.async copies still pending when their thread exited (missing wait)");
            q = CopyQueue{};
          }
        for (size_t i = 0; i < kCanary; ++i)
          if (g_smem[smem + i] != 0xa5) {
            fault(cudaErrorIllegalAddress, "write past the dynamic shared memory size");
            break;
          }
      }
  g_body = nullptr;
  return static_cast<cudaError_t>(g_fault);
}

}  // namespace cnnkernels::cuda::emu

#define threadIdx (::cnnkernels::cuda::emu::g_thread)
#define blockIdx (::cnnkernels::cuda::emu::g_block)
#define blockDim (::cnnkernels::cuda::emu::g_block_dim)
#define gridDim (::cnnkernels::cuda::emu::g_grid)

inline void __syncthreads() { ::cnnkernels::cuda::emu::barrier(); }

#define CNNKERNELS_LAUNCH(kernel, grid, block, smem, stream, ...) \
  (::cnnkernels::cuda::emu::g_last = ::cnnkernels::cuda::emu::launch(kernel, grid, block, smem, stream, __VA_ARGS__))

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Operands are held converted to fp32 (what the tensor cores multiply exactly), so mma_sync is a plain fp32 loop.
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation has the 16x16x16 shape only");
  float x[256];
};

template <typename T>
inline void check_tile(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    ::cnnkernels::cuda::emu::fault(cudaErrorMisalignedAddress, "wmma: pointer not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0)
    ::cnnkernels::cuda::emu::fault(cudaErrorMisalignedAddress, "wmma: ldm not a multiple of 16 bytes");
}

template <typename Use, typename T, typename L>
inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L>& f, const T* p, unsigned ldm) {
  static_assert(std::is_same_v<L, row_major>, "the emulation has row-major operands only");
  check_tile(p, ldm);
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) f.x[r * 16 + c] = static_cast<float>(p[r * ldm + c]);
}

inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename T>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, row_major>& a,
                     const fragment<matrix_b, 16, 16, 16, T, row_major>& b,
                     const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  std::memcpy(out, c.x, sizeof(out));
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k) {
      const float a_ik = a.x[i * 16 + k];
      for (int j = 0; j < 16; ++j) out[i * 16 + j] += a_ik * b.x[k * 16 + j];
    }
  std::memcpy(d.x, out, sizeof(out));
}

// Every lane holds the whole tile; lane 0 writes it (the kernels synchronise before anyone reads it).
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm, layout_t l) {
  check_tile(p, ldm);
  if (l != mem_row_major) ::cnnkernels::cuda::emu::fault(cudaErrorInvalidValue, "wmma: column-major store");
  if (threadIdx.x % 32 != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) p[r * ldm + c] = f.x[r * 16 + c];
}

}  // namespace nvcuda::wmma

namespace cnnkernels::cuda {

inline unsigned char* dyn_smem() { return emu::g_smem; }

template <int Bytes>
inline void async_copy(void* dst, const void* src, bool valid) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
  if (reinterpret_cast<uintptr_t>(dst) % Bytes != 0 || (valid && reinterpret_cast<uintptr_t>(src) % Bytes != 0))
    emu::fault(cudaErrorMisalignedAddress, "cp.async: address not aligned to the copy size");
  if (static_cast<unsigned char*>(dst) < emu::g_smem)
    emu::fault(cudaErrorIllegalAddress, "cp.async: destination outside the dynamic shared memory");
  if (!emu::g_async_copies) {
    valid ? std::memcpy(dst, src, Bytes) : std::memset(dst, 0, Bytes);
    return;
  }
  std::memset(dst, 0x7f, Bytes);  // undefined until the copy is waited for
  emu::g_copies[emu::g_current].open.push_back(emu::PendingCopy{dst, valid ? src : nullptr, Bytes});
}

inline void async_commit() {
  if (!emu::g_async_copies) return;
  emu::CopyQueue& q = emu::g_copies[emu::g_current];
  q.groups.push_back(std::move(q.open));
  q.open.clear();
}

template <int N>
inline void async_wait() {
  emu::CopyQueue& q = emu::g_copies[emu::g_current];
  while (q.groups.size() > static_cast<size_t>(N)) {
    for (const emu::PendingCopy& c : q.groups.front())
      c.src ? std::memcpy(c.dst, c.src, c.bytes) : std::memset(c.dst, 0, c.bytes);
    q.groups.pop_front();
  }
}

namespace rt {

struct DeviceInfo {
  int sms;
  int64_t smem_optin;
  bool async_copy;
};

inline cudaError_t device_info(DeviceInfo& info) {
  info = DeviceInfo{emu::g_config.sms, emu::g_config.smem_optin, emu::g_async_copies};
  return cudaSuccess;
}

template <typename Kernel>
cudaError_t allow_smem(Kernel*, int64_t bytes) {
  return bytes <= emu::g_config.smem_optin ? cudaSuccess : cudaErrorInvalidValue;
}

inline cudaError_t last_error() {
  const cudaError_t e = emu::g_last;
  emu::g_last = cudaSuccess;
  return e;
}

}  // namespace rt
}  // namespace cnnkernels::cuda
