// add_relu on CUDA: relu(a + b) element by element, in 16-byte vectors (4 fp32, 8 fp16/bf16, 2 fp64 per load and
// store) when a, b and out sit at the same offset from a 16-byte boundary, one element at a time otherwise. fp16/bf16
// are added in fp32 and rounded once (the reference's arithmetic), each element converted on its own: the kernel is
// bound by memory, so half2 arithmetic would save nothing.
#include <cstring>

#include "cuda/device_math.h"
#include "cuda/kernels.h"
#include "cuda/tiling.h"
#include "cuda/types.cuh"

namespace cnnkernels::cuda {

namespace {

constexpr int kVecBytes = 16;

template <typename T>
__device__ __forceinline__ T add_relu_one(T a, T b) {
  return from_acc<T>(act_apply(Act::ReLU, to_acc(a) + to_acc(b)));
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_relu_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    out[i] = add_relu_one(a[i], b[i]);
}

// a + head, b + head and out + head are 16-byte aligned (head < one vector): the first head elements and the tail
// past the last whole vector (both shorter than one vector, so the first threads of the grid take them) one by one,
// the rest as uint4 loads and stores.
template <typename T>
__global__ void __launch_bounds__(kThreads) add_relu_vec_kernel(const T* __restrict__ a, const T* __restrict__ b,
                                                                T* __restrict__ out, int64_t n, int head) {
  constexpr int V = kVecBytes / sizeof(T);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t nvec = (n - head) / V, tail = head + nvec * V;
  if (tid < head) out[tid] = add_relu_one(a[tid], b[tid]);
  if (tid < n - tail) out[tail + tid] = add_relu_one(a[tail + tid], b[tail + tid]);
  const uint4* __restrict__ av = reinterpret_cast<const uint4*>(a + head);
  const uint4* __restrict__ bv = reinterpret_cast<const uint4*>(b + head);
  uint4* __restrict__ ov = reinterpret_cast<uint4*>(out + head);
  for (int64_t i = tid; i < nvec; i += stride) {
    const uint4 va = av[i], vb = bv[i];
    T ea[V], eb[V];  // memcpy, not a pointer cast, to view the bits as elements (no aliasing; stays in registers)
    memcpy(ea, &va, kVecBytes);
    memcpy(eb, &vb, kVecBytes);
#pragma unroll
    for (int k = 0; k < V; ++k) ea[k] = add_relu_one(ea[k], eb[k]);
    uint4 vo;
    memcpy(&vo, ea, kVecBytes);
    ov[i] = vo;
  }
}

template <typename T>
cudaError_t launch_add_relu_t(const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  const uintptr_t phase = reinterpret_cast<uintptr_t>(a) % kVecBytes;
  const bool vec = phase % sizeof(T) == 0 && reinterpret_cast<uintptr_t>(b) % kVecBytes == phase &&
                   reinterpret_cast<uintptr_t>(out) % kVecBytes == phase;
  const int64_t head = vec ? static_cast<int64_t>((kVecBytes - phase) % kVecBytes / sizeof(T)) : 0;
  // One grid thread per vector on the vector path (at least one block: the head and tail need the first threads).
  const int64_t work = vec ? (n > head ? (n - head) / (kVecBytes / sizeof(T)) : 0) : n;
  const int64_t blocks = work < 1 ? 1 : ceil_div(work, kThreads);
  const unsigned grid = static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
  if (vec) {
    auto* kernel = &add_relu_vec_kernel<T>;
    CNNKERNELS_LAUNCH(kernel, dim3(grid), dim3(kThreads), 0, stream, static_cast<const T*>(a),
                      static_cast<const T*>(b), static_cast<T*>(out), n, static_cast<int>(head < n ? head : n));
  } else {
    auto* kernel = &add_relu_kernel<T>;
    CNNKERNELS_LAUNCH(kernel, dim3(grid), dim3(kThreads), 0, stream, static_cast<const T*>(a),
                      static_cast<const T*>(b), static_cast<T*>(out), n);
  }
  return rt::last_error();
}

}  // namespace

cudaError_t launch_add_relu(DType t, const void* a, const void* b, void* out, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(t, [&](auto tag) { return launch_add_relu_t<decltype(tag)>(a, b, out, n, stream); });
}

}  // namespace cnnkernels::cuda
